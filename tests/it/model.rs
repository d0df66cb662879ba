//! Integration tests: model — GPT-2 and LSTM logits and gradients against PyTorch, caches, loading errors, training.

use std::path::{Path, PathBuf};

use cadenza::model::markov::Markov;
use cadenza::model::train::{self, FixedData, TrainOptions};
use cadenza::model::{self, Config, GptConfig, LanguageModel, LstmConfig, ModelError};
use candle_core::{Device, Tensor};

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/model").join(name)
}

/// The input of `scripts/make_tiny_models.py`.
const IDS: [u32; 14] = [3, 14, 15, 9, 26, 5, 35, 8, 9, 7, 9, 32, 63, 0];
/// Rows of the logits printed by the script.
const ROWS: [usize; 3] = [0, 6, 13];

/// Logits of the random tiny GPT-2 (`tests/data/model/tiny-gpt2`, saved by Hugging Face
/// transformers 5.23 `save_pretrained`) for `IDS`, computed by `GPT2LMHeadModel` with
/// torch 2.15.0+cu132 (`python3 scripts/make_tiny_models.py`).
#[allow(clippy::excessive_precision)]
const GPT2_LOGITS: [[f32; 64]; 3] = [
    // position 0
    [
        2.497541, 0.046889, 0.207273, 0.658327, 1.385101, 1.237283, -0.151172, -0.006334, 0.064656, -0.836190,
        -1.038299, -0.421952, -0.569702, -0.515149, 1.641545, 1.120887, -0.814690, 2.242408, -0.188237, 0.913121,
        0.391372, 1.924104, -0.469362, -0.392786, -1.210721, -1.329955, -3.960847, 0.163081, -1.115097, -0.895371,
        0.872995, 1.009771, 0.857827, 0.519837, 1.511554, -2.589684, 0.994882, 0.635766, -0.227290, 1.360688,
        -2.026808, 0.613009, 3.248046, -0.714722, 0.724669, -0.081448, 0.761974, 0.274922, -0.116291, 0.160792,
        1.520704, 0.157764, 2.059899, -0.233630, -1.529474, -0.001864, 2.547114, -0.967810, -1.214123, 1.571106,
        1.367569, -0.981269, -2.007239, -0.509992,
    ],
    // position 6
    [
        2.051062, 0.794115, 0.735299, -0.496204, 0.786349, 1.600165, 1.569836, -1.183644, 0.540762, -2.439108,
        -0.201928, 0.341453, -0.750989, -0.124940, 0.868598, 0.992457, -1.398168, 1.798047, -0.691239, 1.806480,
        -0.060114, 0.995244, 0.085330, -0.931388, 0.314932, -0.759624, -1.682936, -0.679733, -1.152215, -0.104005,
        1.251781, 1.561839, 1.013870, 1.088371, 2.010675, -2.242386, 1.975379, 1.296063, 1.788289, 0.407299, -1.798576,
        0.495552, 2.175021, -1.025522, 0.752147, 0.214326, 1.192695, -1.073535, -1.242640, -0.312478, 0.657689,
        0.425909, 1.746866, -0.299975, -2.358730, 0.164071, 1.845812, -1.550230, -0.971104, 1.246859, 1.811097,
        -0.551225, -2.249050, -0.747500,
    ],
    // position 13
    [
        3.161216, 1.257853, -0.100467, 0.079339, 0.974587, 0.940275, 1.341622, -2.243120, 0.253832, -1.333093,
        -0.113701, 0.855497, -1.465941, -0.548124, 1.038890, 1.375887, -0.963484, 1.730103, -0.241688, 1.732115,
        -0.135242, 0.583893, 0.217232, -0.183192, 0.704174, 0.202030, -1.793762, -1.447003, -1.049726, -0.272034,
        0.859402, 0.714543, 0.072793, 1.137130, 2.894035, -2.658580, 1.418639, 1.555865, 1.634097, 0.596633, -2.377045,
        0.542475, 1.633190, -1.312100, 0.514742, 0.416461, 1.362805, -0.770204, -1.252523, -0.364981, 0.175442,
        0.156042, 1.677590, 0.052507, -2.545224, -0.168436, 1.919452, -1.768723, -0.896136, 0.803912, 2.084114,
        -0.348095, -1.547676, -1.069193,
    ],
];

/// Logits of the PyTorch embedding → 2-layer `nn.LSTM` → linear model in
/// `tests/data/model/tiny-lstm` for `IDS` (same script).
#[allow(clippy::excessive_precision)]
const LSTM_LOGITS: [[f32; 64]; 3] = [
    // position 0
    [
        -0.080156, 0.137369, -0.093932, -0.047001, 0.058235, 0.048628, 0.127358, -0.045398, 0.091033, -0.117818,
        0.161434, 0.147425, -0.247499, 0.071655, 0.105202, -0.073052, -0.028995, 0.012294, -0.199862, 0.143874,
        -0.100735, 0.031788, -0.036508, 0.156344, 0.031215, -0.110802, -0.170823, 0.066306, 0.092652, -0.142250,
        0.105520, -0.074435, 0.072263, -0.123002, 0.111205, 0.145724, 0.066896, -0.163792, 0.104492, -0.045655,
        -0.146095, -0.077499, -0.147320, 0.095523, 0.145165, -0.163704, 0.041544, 0.098433, -0.161795, -0.185903,
        -0.029220, 0.161504, -0.029780, -0.144288, 0.155390, -0.065427, -0.085551, 0.129037, -0.034282, 0.162964,
        -0.176953, -0.167231, 0.017388, -0.044143,
    ],
    // position 6
    [
        -0.117120, 0.068609, -0.103311, -0.062285, 0.137851, 0.044980, 0.107216, -0.024049, 0.064882, -0.140808,
        0.155580, 0.151266, -0.278009, 0.047918, 0.137659, -0.034453, 0.022019, -0.022666, -0.225960, 0.149901,
        -0.090075, 0.027528, -0.089416, 0.173469, 0.034119, -0.165151, -0.136964, 0.090938, 0.131184, -0.136916,
        0.133350, -0.082449, 0.044356, -0.182767, 0.129817, 0.130938, 0.071525, -0.135005, 0.065321, -0.043482,
        -0.164760, -0.116467, -0.091141, 0.058306, 0.169691, -0.175557, 0.062370, 0.091188, -0.150894, -0.185989,
        -0.037924, 0.186461, -0.044521, -0.092363, 0.215054, -0.026372, -0.106136, 0.097414, 0.026548, 0.141297,
        -0.151998, -0.202170, -0.018339, -0.073968,
    ],
    // position 13
    [
        -0.097098, 0.098163, -0.054286, -0.072777, 0.107449, 0.042021, 0.074494, -0.049938, 0.053740, -0.117926,
        0.148831, 0.170984, -0.265266, 0.083045, 0.158926, -0.044508, -0.022699, 0.032331, -0.218052, 0.177372,
        -0.122378, 0.053194, -0.094107, 0.165719, 0.014773, -0.089327, -0.174944, 0.133561, 0.108122, -0.135429,
        0.112492, -0.064163, 0.075818, -0.144529, 0.135130, 0.163855, 0.075420, -0.149660, 0.093213, -0.030475,
        -0.168730, -0.078627, -0.113367, 0.075480, 0.108726, -0.178225, 0.068683, 0.090579, -0.196079, -0.202976,
        -0.046321, 0.180253, -0.058178, -0.094039, 0.199919, -0.079417, -0.081746, 0.133166, -0.024344, 0.177266,
        -0.199965, -0.182958, -0.008343, -0.101272,
    ],
];

fn ids(batch: usize, seq: &[u32]) -> Tensor {
    let v: Vec<u32> = (0..batch).flat_map(|_| seq.iter().copied()).collect();
    Tensor::from_vec(v, (batch, seq.len()), &Device::Cpu).expect("tensor")
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// Both ways a model folder loads: `model::load` (the hand-written CPU decoder for GPT-2) and
/// `model::load_candle`; every reference test runs on each.
type Loader = fn(PathBuf, &Device) -> Result<std::sync::Arc<dyn LanguageModel>, ModelError>;
const LOADERS: [(&str, Loader); 2] =
    [("load", |d, dev| model::load(d, dev)), ("load_candle", |d, dev| model::load_candle(d, dev))];

fn check_reference(dir: &str, reference: &[[f32; 64]; 3]) {
    for (how, load) in LOADERS {
        check_reference_with(dir, reference, how, load);
    }
}

fn check_reference_with(dir: &str, reference: &[[f32; 64]; 3], how: &str, load: Loader) {
    let m = load(data(dir), &Device::Cpu).expect("load");
    assert_eq!(m.vocab_size(), 64);
    let mut state = m.new_state(1).expect("state");
    let logits = m.forward_all(&ids(1, &IDS), &mut state).expect("forward");
    assert_eq!(logits.dims(), &[1, IDS.len(), 64]);
    let rows = logits.squeeze(0).unwrap().to_vec2::<f32>().unwrap();
    for (r, want) in ROWS.iter().zip(reference) {
        let d = max_diff(&rows[*r], want);
        assert!(d < 1e-4, "{dir} ({how}) position {r}: max difference {d}");
    }
}

#[test]
fn gpt2_logits_match_transformers() {
    check_reference("tiny-gpt2", &GPT2_LOGITS);
}

#[test]
fn lstm_logits_match_pytorch() {
    check_reference("tiny-lstm", &LSTM_LOGITS);
}

/// Loss of predicting `IDS[1..]` from `IDS[..13]` and, per parameter, the sum and the sum of
/// absolute values of its gradient, computed by PyTorch (torch 2.15.0+cu132, transformers'
/// `GPT2LMHeadModel` and `nn.LSTM`) from the same checkpoints with dropout off
/// (`python3 scripts/tiny_model_grads.py`).
#[allow(clippy::excessive_precision)]
mod reference_grads {
    pub const GPT2_LOSS: f32 = 4.862201;
    pub const GPT2_GRADS: &[(&str, f32, f32)] = &[
        ("wte.weight", -2.384186e-07, 5.409368e+01),
        ("wpe.weight", -1.192093e-07, 2.638087e+01),
        ("h.0.ln_1.weight", 1.915465e-01, 2.239278e+00),
        ("h.0.ln_1.bias", -4.264036e-01, 2.082691e+00),
        ("h.0.attn.c_attn.weight", 7.139719e-02, 9.784679e+01),
        ("h.0.attn.c_attn.bias", -1.296794e-01, 2.720690e+00),
        ("h.0.attn.c_proj.weight", -1.043081e-07, 3.587646e+01),
        ("h.0.attn.c_proj.bias", 4.470348e-08, 1.707243e+00),
        ("h.0.ln_2.weight", -3.020338e-01, 1.387525e+00),
        ("h.0.ln_2.bias", 4.071276e-01, 1.061514e+00),
        ("h.0.mlp.c_fc.weight", 3.832951e-01, 5.897491e+01),
        ("h.0.mlp.c_fc.bias", -2.489712e-01, 1.803778e+00),
        ("h.0.mlp.c_proj.weight", 1.311302e-06, 5.536921e+01),
        ("h.0.mlp.c_proj.bias", 1.862645e-08, 7.374809e-01),
        ("h.1.ln_1.weight", -1.392831e-01, 8.240840e-01),
        ("h.1.ln_1.bias", -1.717221e-01, 7.977965e-01),
        ("h.1.attn.c_attn.weight", -9.472542e-03, 2.476886e+01),
        ("h.1.attn.c_attn.bias", 2.045213e-01, 8.661261e-01),
        ("h.1.attn.c_proj.weight", 1.788139e-07, 1.728257e+01),
        ("h.1.attn.c_proj.bias", 1.862645e-08, 6.739428e-01),
        ("h.1.ln_2.weight", 1.057034e-01, 8.442922e-01),
        ("h.1.ln_2.bias", -1.653496e-01, 9.398849e-01),
        ("h.1.mlp.c_fc.weight", 2.778646e-01, 4.388358e+01),
        ("h.1.mlp.c_fc.bias", 1.967669e-01, 1.426854e+00),
        ("h.1.mlp.c_proj.weight", 7.152557e-07, 4.099486e+01),
        ("h.1.mlp.c_proj.bias", 1.117587e-08, 5.013994e-01),
        ("ln_f.weight", 1.498201e+00, 1.880740e+00),
        ("ln_f.bias", -1.435782e-01, 2.226890e+00),
    ];
    pub const LSTM_LOSS: f32 = 4.191682;
    pub const LSTM_GRADS: &[(&str, f32, f32)] = &[
        ("wte.weight", -1.656848e-03, 3.976431e-02),
        ("lstm.weight_ih_l0", -2.596729e-02, 6.905086e-01),
        ("lstm.weight_hh_l0", -3.010826e-03, 1.761233e-01),
        ("lstm.bias_ih_l0", -4.929101e-03, 7.801908e-02),
        ("lstm.bias_hh_l0", -4.929101e-03, 7.801908e-02),
        ("lstm.weight_ih_l1", 1.607090e-02, 7.552383e-01),
        ("lstm.weight_hh_l1", -6.074074e-03, 5.687888e-01),
        ("lstm.bias_ih_l1", 3.398112e-02, 3.281110e-01),
        ("lstm.bias_hh_l1", 3.398112e-02, 3.281110e-01),
        ("head.weight", -9.546056e-09, 2.754214e+00),
        ("head.bias", 4.470348e-08, 1.657267e+00),
    ];
}

/// One training step of `dir`'s model as `cadenza train` runs it (dropout set to zero): the
/// loss and every parameter's gradient against PyTorch's.
fn check_gradients(dir: &str, want_loss: f32, want: &[(&str, f32, f32)]) {
    let dev = Device::Cpu;
    let mut cfg = model::load::read_config(&data(dir)).expect("config");
    match &mut cfg {
        Config::Gpt2(c) => (c.embd_pdrop, c.attn_pdrop, c.resid_pdrop) = (0.0, 0.0, 0.0),
        Config::Lstm(c) => c.dropout = 0.0,
    }
    let varmap = candle_nn::VarMap::new();
    let net =
        train::Net::new(&cfg, candle_nn::VarBuilder::from_varmap(&varmap, candle_core::DType::F32, &dev)).expect("net");
    let saved = candle_core::safetensors::load(data(dir).join("model.safetensors"), &dev).expect("weights");
    for (name, var) in varmap.data().lock().unwrap().iter() {
        let t = saved.get(name).or_else(|| saved.get(&format!("transformer.{name}"))).expect(name);
        var.set(t).expect("set");
    }
    let n = IDS.len() - 1;
    let x = Tensor::from_vec(IDS[..n].to_vec(), (1, n), &dev).unwrap();
    let y = Tensor::from_vec(IDS[1..].to_vec(), (1, n), &dev).unwrap();
    // Both ways to the loss: the logits and candle's cross-entropy, and the head fused into the
    // loss (`Net::loss`, what `cadenza train` steps on).
    for fused in [false, true] {
        let mut dropout = model::Dropout::new(0);
        let loss = if fused {
            net.loss(&x, &y, Some(&mut dropout)).expect("fused loss")
        } else {
            train::loss(&net.logits(&x, Some(&mut dropout)).expect("logits"), &y).expect("loss")
        };
        let got_loss = loss.to_scalar::<f32>().unwrap();
        assert!((got_loss - want_loss).abs() < 1e-4, "{dir} (fused {fused}): loss {got_loss}, PyTorch {want_loss}");
        let grads = loss.backward().expect("backward");
        let vars = varmap.data().lock().unwrap();
        assert_eq!(vars.len(), want.len(), "{dir}: parameters");
        for &(name, sum, abs_sum) in want {
            let g = grads.get(vars.get(name).unwrap_or_else(|| panic!("{dir}: no parameter {name}"))).expect(name);
            let got_sum = g.sum_all().unwrap().to_scalar::<f32>().unwrap();
            let got_abs = g.abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
            // Sums of gradients that cancel to ~0 are compared at the scale of their magnitude.
            let tol = 1e-4 * abs_sum + 1e-6;
            assert!(
                (got_sum - sum).abs() <= tol,
                "{dir} {name} (fused {fused}): gradient sum {got_sum}, PyTorch {sum}"
            );
            assert!(
                (got_abs - abs_sum).abs() <= tol,
                "{dir} {name} (fused {fused}): gradient |sum| {got_abs}, PyTorch {abs_sum}"
            );
        }
    }
}

#[test]
fn gpt2_gradients_match_transformers() {
    check_gradients("tiny-gpt2", reference_grads::GPT2_LOSS, reference_grads::GPT2_GRADS);
}

#[test]
fn lstm_gradients_match_pytorch() {
    check_gradients("tiny-lstm", reference_grads::LSTM_LOSS, reference_grads::LSTM_GRADS);
}

/// Feeding a sequence in pieces through the state (KV cache / LSTM state) gives the logits of
/// one full pass, for every row of a batch.
fn check_incremental(dir: &str) {
    for (how, load) in LOADERS {
        check_incremental_with(&format!("{dir} ({how})"), load(data(dir), &Device::Cpu).expect("load"));
    }
}

fn check_incremental_with(dir: &str, m: std::sync::Arc<dyn LanguageModel>) {
    let full = {
        let mut s = m.new_state(2).unwrap();
        m.forward_all(&ids(2, &IDS), &mut s).unwrap()
    };
    let mut s = m.new_state(2).unwrap();
    let mut pieces = Vec::new();
    let mut at = 0;
    for len in [5, 1, 1, 7] {
        let part = ids(2, &IDS[at..at + len]);
        pieces.push(m.forward_all(&part, &mut s).unwrap());
        at += len;
        assert_eq!(s.len(), at);
    }
    let inc = Tensor::cat(&pieces, 1).unwrap();
    let d = max_diff(&full.flatten_all().unwrap().to_vec1().unwrap(), &inc.flatten_all().unwrap().to_vec1().unwrap());
    assert!(d < 1e-4, "{dir}: incremental differs from full by {d}");
    // `forward` returns the last position only.
    let mut s = m.new_state(2).unwrap();
    let last = m.forward(&ids(2, &IDS), &mut s).unwrap();
    assert_eq!(last.dims(), &[2, 64]);
    let want = full.narrow(1, IDS.len() - 1, 1).unwrap().squeeze(1).unwrap();
    let d = max_diff(&last.flatten_all().unwrap().to_vec1().unwrap(), &want.flatten_all().unwrap().to_vec1().unwrap());
    assert!(d < 1e-5, "{dir}: forward vs forward_all last row differ by {d}");
}

#[test]
fn gpt2_kv_cache_matches_full_forward() {
    check_incremental("tiny-gpt2");
}

#[test]
fn lstm_state_matches_full_forward() {
    check_incremental("tiny-lstm");
}

#[test]
fn gpt2_reports_full_context() {
    for (_, load) in LOADERS {
        let m = load(data("tiny-gpt2"), &Device::Cpu).unwrap();
        assert_eq!(m.context(), 32);
        let mut s = m.new_state(1).unwrap();
        m.forward(&ids(1, &[1; 30]), &mut s).unwrap();
        match m.forward(&ids(1, &[1; 3]), &mut s) {
            Err(ModelError::ContextFull { context: 32, needed: 33 }) => {}
            other => panic!("expected ContextFull, got {:?}", other.map(|t| t.dims().to_vec())),
        }
        // A state of another batch size is refused, not a panic.
        assert!(m.forward(&ids(2, &[1]), &mut s).is_err());
    }
}

#[test]
fn load_errors_name_the_file_and_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let err = model::load(tmp.path(), &Device::Cpu).err().expect("no config");
    let text = err.to_string();
    assert!(text.contains("config.json"), "{text}");

    std::fs::write(tmp.path().join("config.json"), r#"{"arch": "rnn"}"#).unwrap();
    let text = model::load(tmp.path(), &Device::Cpu).err().unwrap().to_string();
    assert!(text.contains("unknown arch `rnn`"), "{text}");

    std::fs::write(
        tmp.path().join("config.json"),
        r#"{"arch": "gpt2", "vocab_size": 64, "n_positions": 32, "n_embd": 30, "n_layer": 1, "n_head": 4}"#,
    )
    .unwrap();
    let text = model::load(tmp.path(), &Device::Cpu).err().unwrap().to_string();
    assert!(text.contains("not a multiple of n_head"), "{text}");

    // A config bigger than the weights: the missing or mis-shaped tensor is named.
    let cfg =
        std::fs::read_to_string(data("tiny-gpt2/config.json")).unwrap().replace("\"n_layer\": 2", "\"n_layer\": 3");
    std::fs::write(tmp.path().join("config.json"), cfg).unwrap();
    let text = model::load(tmp.path(), &Device::Cpu).err().unwrap().to_string();
    assert!(text.contains("model.safetensors"), "{text}");
    std::fs::copy(data("tiny-gpt2/model.safetensors"), tmp.path().join("model.safetensors")).unwrap();
    let text = model::load(tmp.path(), &Device::Cpu).err().unwrap().to_string();
    assert!(text.contains("model.safetensors") && text.contains("h.2"), "{text}");

    std::fs::write(tmp.path().join("model.safetensors"), b"not safetensors").unwrap();
    let text = model::load(tmp.path(), &Device::Cpu).err().unwrap().to_string();
    assert!(text.contains("model.safetensors") && text.contains("not a safetensors file"), "{text}");

    // Weights holding NaN say so, naming the tensor, in both GPT implementations (before,
    // generation failed later with "no token satisfies the constraints").
    std::fs::copy(data("tiny-gpt2/config.json"), tmp.path().join("config.json")).unwrap();
    let mut tensors = candle_core::safetensors::load(data("tiny-gpt2/model.safetensors"), &Device::Cpu).unwrap();
    let name = tensors.keys().find(|k| k.ends_with("ln_f.bias")).unwrap().clone();
    let poisoned = tensors[&name].affine(0.0, f64::NAN).unwrap();
    tensors.insert(name.clone(), poisoned);
    candle_core::safetensors::save(&tensors, tmp.path().join("model.safetensors")).unwrap();
    let text = model::load(tmp.path(), &Device::Cpu).err().unwrap().to_string();
    assert!(text.contains(&format!("weight `{name}` holds NaN")), "{text}");
    let text = cadenza::model::gpt_cpu::CpuGpt::load(tmp.path()).err().unwrap().to_string();
    assert!(text.contains("holds NaN"), "{text}");
}

#[test]
fn config_json_round_trips_with_hugging_face_names() {
    let cfg = Config::Gpt2(GptConfig {
        vocab_size: 100,
        n_positions: 256,
        n_embd: 64,
        n_layer: 2,
        n_head: 4,
        n_inner: None,
        layer_norm_epsilon: 1e-5,
        activation_function: "gelu_new".into(),
        scale_attn_weights: true,
        scale_attn_by_inverse_layer_idx: false,
        embd_pdrop: 0.1,
        attn_pdrop: 0.0,
        resid_pdrop: 0.1,
    });
    let json = cfg.to_json();
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["arch"], "gpt2");
    assert_eq!(v["model_type"], "gpt2");
    assert_eq!(v["n_embd"], 64);
    assert_eq!(Config::from_json(&json).unwrap(), cfg);
    let lstm = Config::Lstm(LstmConfig { vocab_size: 10, n_embd: 8, hidden_size: 16, n_layer: 2, dropout: 0.2 });
    assert_eq!(Config::from_json(&lstm.to_json()).unwrap(), lstm);
    // Hugging Face's file (no `arch`) selects GPT-2 through `model_type`.
    let hf = std::fs::read_to_string(data("tiny-gpt2/config.json")).unwrap();
    assert!(matches!(Config::from_json(&hf), Ok(Config::Gpt2(c)) if c.n_layer == 2 && c.n_head == 4));
}

#[test]
fn param_count_matches_the_weights() {
    let hf = Config::from_json(&std::fs::read_to_string(data("tiny-gpt2/config.json")).unwrap()).unwrap();
    let lstm = Config::from_json(&std::fs::read_to_string(data("tiny-lstm/config.json")).unwrap()).unwrap();
    for (cfg, file) in [(hf, "tiny-gpt2/model.safetensors"), (lstm, "tiny-lstm/model.safetensors")] {
        let tensors = candle_core::safetensors::load(data(file), &Device::Cpu).unwrap();
        let n: usize = tensors.values().map(|t| t.elem_count()).sum();
        assert_eq!(cfg.param_count(), n, "{file}");
    }
}

/// Sequences that repeat the id two places back (a b a b …, 5% noise): a first-order chain cannot
/// predict them, a model that looks two back can.
fn synthetic(n: usize, len: usize, vocab: u32, seed: u64) -> Vec<Vec<u32>> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            let mut s = vec![rng.gen_range(1..vocab), rng.gen_range(1..vocab)];
            while s.len() < len {
                let k = s.len();
                let next = if rng.gen_bool(0.05) { rng.gen_range(1..vocab) } else { s[k - 2] };
                s.push(next);
            }
            s
        })
        .collect()
}

fn tiny_gpt(vocab: usize) -> Config {
    Config::Gpt2(GptConfig {
        vocab_size: vocab,
        n_positions: 32,
        n_embd: 32,
        n_layer: 2,
        n_head: 4,
        n_inner: None,
        layer_norm_epsilon: 1e-5,
        activation_function: "gelu_new".into(),
        scale_attn_weights: true,
        scale_attn_by_inverse_layer_idx: false,
        embd_pdrop: 0.0,
        attn_pdrop: 0.0,
        resid_pdrop: 0.05,
    })
}

fn quick_opts() -> TrainOptions {
    TrainOptions {
        batch: 8,
        context: 24,
        lr: 3e-3,
        warmup: 10,
        epochs: 4,
        seed: 7,
        separator: Some(0),
        progress: false,
        patience: 0,
        ..TrainOptions::default()
    }
}

/// Loss (nats per id) of a loaded model over `seqs` joined with separator 0, one window.
fn loaded_loss(m: &dyn LanguageModel, seqs: &[Vec<u32>], context: usize) -> f64 {
    let stream = train::stream(seqs, Some(0));
    let mut total = 0.0;
    let mut n = 0usize;
    for start in train::window_starts(stream.len(), context, 0) {
        let mut s = m.new_state(1).unwrap();
        let logits = m.forward_all(&ids(1, &stream[start..start + context]), &mut s).unwrap();
        let target = ids(1, &stream[start + 1..start + context + 1]);
        total += train::loss(&logits, &target).unwrap().to_scalar::<f32>().unwrap() as f64 * context as f64;
        n += context;
    }
    total / n as f64
}

#[test]
fn gpt_learns_a_rule_and_beats_the_markov_chain() {
    let vocab = 12;
    let mut data = FixedData { train: synthetic(200, 40, vocab as u32, 1), valid: synthetic(10, 40, vocab as u32, 2) };
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("m");
    let opts = TrainOptions { epochs: 8, lr: 1e-2, ..quick_opts() };
    let report = train::train(&tiny_gpt(vocab), &mut data, &opts, &out, false, &Device::Cpu).unwrap();
    let first = report.history.first().unwrap().val_loss;
    let best = report.best_val_loss.unwrap();
    assert_eq!(report.epochs_completed, 8);
    assert!(best < 0.6 * first, "validation loss went from {first} to {best}");
    // A first-order chain cannot see the rule (it needs two ids); the GPT must beat it.
    let train_stream = train::stream(&data.train, Some(0));
    let valid_stream = train::stream(&data.valid, Some(0));
    let (_, order1) = Markov::fit_tuned(&train_stream, &valid_stream, 1, vocab);
    assert!(best < order1, "GPT {best} vs order-1 Markov {order1}");
    // What was written loads and scores like the best validation said.
    for f in [
        "config.json",
        "model.safetensors",
        "train.json",
        "checkpoints/state.json",
        "checkpoints/optimizer.safetensors",
    ] {
        assert!(out.join(f).exists(), "{f} missing");
    }
    let m = model::load(&out, &Device::Cpu).unwrap();
    let reloaded = loaded_loss(m.as_ref(), &data.valid, opts.context);
    assert!((reloaded - best).abs() < 0.05, "reloaded loss {reloaded} vs reported {best}");
}

/// `--init-from`: a GPT grown by two blocks computes exactly what the trained smaller one did
/// (the added blocks start as the identity), and training goes on from there.
#[test]
fn a_grown_gpt_starts_where_the_smaller_one_ended() {
    let vocab = 12;
    let mut data = FixedData { train: synthetic(200, 40, vocab as u32, 1), valid: synthetic(10, 40, vocab as u32, 2) };
    let tmp = tempfile::tempdir().unwrap();
    let small_dir = tmp.path().join("small");
    let opts = TrainOptions { epochs: 3, lr: 1e-2, ..quick_opts() };
    let small_report = train::train(&tiny_gpt(vocab), &mut data, &opts, &small_dir, false, &Device::Cpu).unwrap();
    let Config::Gpt2(small_cfg) = tiny_gpt(vocab) else { unreachable!() };
    let deep = Config::Gpt2(GptConfig { n_layer: 4, ..small_cfg.clone() });

    let varmap = candle_nn::VarMap::new();
    let vb = candle_nn::VarBuilder::from_varmap(&varmap, candle_core::DType::F32, &Device::Cpu);
    let _net = train::Net::new(&deep, vb).unwrap();
    train::init_params(&varmap, &deep, 5).unwrap();
    let (copied, added) = train::grow_from(&varmap, &small_dir.join("model.safetensors")).unwrap();
    // Per block: two layer norms, c_attn, attn.c_proj, c_fc, mlp.c_proj, each weight and bias.
    assert_eq!((copied, added), (4 + 2 * 12, 2 * 12));
    let grown_dir = tmp.path().join("grown");
    std::fs::create_dir_all(&grown_dir).unwrap();
    std::fs::write(grown_dir.join("config.json"), deep.to_json()).unwrap();
    varmap.save(grown_dir.join("model.safetensors")).unwrap();
    let (small, grown) =
        (model::load(&small_dir, &Device::Cpu).unwrap(), model::load(&grown_dir, &Device::Cpu).unwrap());
    let seq: Vec<u32> = data.valid[0][..20].to_vec();
    let logits = |m: &dyn LanguageModel| {
        let mut st = m.new_state(1).unwrap();
        m.forward_all(&ids(1, &seq), &mut st).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap()
    };
    let (a, b) = (logits(small.as_ref()), logits(grown.as_ref()));
    assert!(max_diff(&a, &b) < 1e-5, "the grown network differs by {}", max_diff(&a, &b));

    // A mismatched width is refused with the variable named.
    let wide = Config::Gpt2(GptConfig { n_embd: 64, ..small_cfg });
    let varmap = candle_nn::VarMap::new();
    let _net =
        train::Net::new(&wide, candle_nn::VarBuilder::from_varmap(&varmap, candle_core::DType::F32, &Device::Cpu))
            .unwrap();
    let e = train::grow_from(&varmap, &small_dir.join("model.safetensors")).unwrap_err().to_string();
    assert!(e.contains("is [") && e.contains("there and"), "{e}");

    // Training from the grown start: its first validation is where the small model ended.
    let grown_opts =
        TrainOptions { epochs: 1, lr: 1e-3, init_from: Some(small_dir.join("model.safetensors")), ..quick_opts() };
    let report = train::train(&deep, &mut data, &grown_opts, &tmp.path().join("run"), false, &Device::Cpu).unwrap();
    let (start, best) = (report.history.first().unwrap().val_loss, small_report.best_val_loss.unwrap());
    assert!(start < best + 0.1, "the grown run's first validation {start} vs the small model's {best}");
}

#[test]
fn lstm_trains() {
    let vocab = 12;
    let mut data = FixedData { train: synthetic(200, 40, vocab as u32, 3), valid: synthetic(10, 40, vocab as u32, 4) };
    let tmp = tempfile::tempdir().unwrap();
    let cfg = Config::Lstm(LstmConfig { vocab_size: vocab, n_embd: 16, hidden_size: 32, n_layer: 2, dropout: 0.0 });
    let opts = TrainOptions { lr: 1e-2, ..quick_opts() };
    let report = train::train(&cfg, &mut data, &opts, tmp.path(), false, &Device::Cpu).unwrap();
    let first = report.history.first().unwrap().val_loss;
    let best = report.best_val_loss.unwrap();
    assert!(best < 0.8 * first, "LSTM validation loss went from {first} to {best}");
    let m = model::load(tmp.path(), &Device::Cpu).unwrap();
    assert_eq!(m.context(), usize::MAX);
}

#[test]
fn resume_continues_exactly() {
    let vocab = 12;
    let make = || FixedData { train: synthetic(30, 30, vocab as u32, 5), valid: synthetic(4, 30, vocab as u32, 6) };
    let cfg = Config::Gpt2(GptConfig {
        resid_pdrop: 0.1,
        attn_pdrop: 0.1,
        embd_pdrop: 0.1,
        ..match tiny_gpt(vocab) {
            Config::Gpt2(c) => c,
            _ => unreachable!(),
        }
    });
    let opts = TrainOptions { epochs: 3, ..quick_opts() };
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let ra = train::train(&cfg, &mut make(), &opts, &a, false, &Device::Cpu).unwrap();
    // Stop part-way through the second epoch, then resume with the same options.
    let stop_at = ra.steps / 2 + 1;
    let rb1 = train::train(
        &cfg,
        &mut make(),
        &TrainOptions { max_steps: Some(stop_at), ..opts.clone() },
        &b,
        false,
        &Device::Cpu,
    )
    .unwrap();
    assert_eq!(rb1.steps, stop_at);
    let rb = train::train(&cfg, &mut make(), &opts, &b, true, &Device::Cpu).unwrap();
    assert_eq!(ra.steps, rb.steps);
    let wa = candle_core::safetensors::load(a.join("checkpoints/model.safetensors"), &Device::Cpu).unwrap();
    let wb = candle_core::safetensors::load(b.join("checkpoints/model.safetensors"), &Device::Cpu).unwrap();
    assert_eq!(wa.len(), wb.len());
    for (name, ta) in &wa {
        let d = max_diff(
            &ta.flatten_all().unwrap().to_vec1().unwrap(),
            &wb[name].flatten_all().unwrap().to_vec1().unwrap(),
        );
        assert!(d < 1e-5, "{name} differs by {d} after resume");
    }
    // The validation after the interruption is part of history, so compare the last one.
    let (la, lb) = (ra.history.last().unwrap().val_loss, rb.history.last().unwrap().val_loss);
    assert!((la - lb).abs() < 1e-5, "{la} vs {lb}");
}

#[test]
fn adamw_matches_candle_nn_and_clipping_uses_the_global_norm() {
    use candle_core::Var;
    use candle_nn::Optimizer;
    let init = [[0.5f32, -1.0, 2.0], [1.5, 0.25, -0.75]];
    let target = Tensor::new(&[[1.0f32, 2.0, 3.0], [-1.0, 0.0, 1.0]], &Device::Cpu).unwrap();
    // Reference: candle-nn's AdamW (weight decay on everything).
    let v_ref = Var::new(&init, &Device::Cpu).unwrap();
    let params = candle_nn::ParamsAdamW { lr: 0.05, beta1: 0.9, beta2: 0.99, eps: 1e-8, weight_decay: 0.1 };
    let mut reference = candle_nn::AdamW::new(vec![v_ref.clone()], params).unwrap();
    // Ours, through a VarMap.
    let varmap = candle_nn::VarMap::new();
    let vb = candle_nn::VarBuilder::from_varmap(&varmap, candle_core::DType::F32, &Device::Cpu);
    let w = vb.get_with_hints((2, 3), "w", candle_nn::Init::Const(0.0)).unwrap();
    varmap.data().lock().unwrap()["w"].set(&Tensor::new(&init, &Device::Cpu).unwrap()).unwrap();
    let mut ours = train::AdamW::new(&varmap, 0.9, 0.99, 0.1, true).unwrap();
    for _ in 0..5 {
        let l_ref = (v_ref.as_tensor() - &target).unwrap().sqr().unwrap().sum_all().unwrap();
        reference.backward_step(&l_ref).unwrap();
        let l = (&w - &target).unwrap().sqr().unwrap().sum_all().unwrap();
        let grads = l.backward().unwrap();
        // The gradient of Σ(w - t)² is 2(w - t); its global norm is checked by hand.
        let manual = ((&w - &target).unwrap() * 2.0)
            .unwrap()
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
            .sqrt();
        let norm = ours.grad_norm(&grads).unwrap();
        assert!((norm - manual as f64).abs() < 1e-4, "{norm} vs {manual}");
        ours.step(&grads, 0.05, 1.0).unwrap();
    }
    let d = max_diff(&v_ref.flatten_all().unwrap().to_vec1().unwrap(), &w.flatten_all().unwrap().to_vec1().unwrap());
    assert!(d < 1e-6, "ours differs from candle-nn AdamW by {d}");
}

#[test]
fn learning_rate_warms_up_then_decays_by_cosine() {
    let opts = TrainOptions { lr: 1e-3, min_lr_ratio: 0.1, warmup: 10, ..TrainOptions::default() };
    assert!((train::learning_rate(&opts, 0, 0.0) - 1e-4).abs() < 1e-12);
    assert!((train::learning_rate(&opts, 9, 0.0) - 1e-3).abs() < 1e-12);
    assert!((train::learning_rate(&opts, 100, 0.5) - 0.55e-3).abs() < 1e-12);
    assert!((train::learning_rate(&opts, 1000, 1.0) - 1e-4).abs() < 1e-12);
    // Resumed at step 500 without the optimizer's moments: the rate ramps up again from there.
    assert_eq!(train::rewarm(&opts, None, 500), 1.0);
    assert!((train::rewarm(&opts, Some(500), 500) - 0.1).abs() < 1e-12);
    assert!((train::rewarm(&opts, Some(500), 504) - 0.5).abs() < 1e-12);
    assert_eq!(train::rewarm(&opts, Some(500), 509), 1.0);
    assert_eq!(train::rewarm(&opts, Some(500), 5000), 1.0);
}

#[test]
fn markov_chain_is_normalised_and_counts_by_hand() {
    // Stream 1 2 3 1 2 4, order 2, α = 1, vocab 5.
    let s = [1u32, 2, 3, 1, 2, 4];
    let m = Markov::fit(&s, 2, 5, 1.0);
    for history in [&[][..], &[1][..], &[1, 2][..], &[4, 4][..]] {
        let total: f64 = (0..5).map(|w| m.prob(history, w)).sum();
        assert!((total - 1.0).abs() < 1e-12, "{history:?} sums to {total}");
    }
    // Unigram: c(3) = 1 of 6, add-one over 5 ids: 2/11.
    let p0 = 2.0 / 11.0;
    // Order 1, context [2]: seen twice, followed by 3 once: (1 + p0) / (2 + 1).
    let p1 = (1.0 + p0) / 3.0;
    // Order 2, context [1, 2]: seen twice, followed by 3 once.
    let p2 = (1.0 + p1) / 3.0;
    assert!((m.prob(&[1, 2], 3) - p2).abs() < 1e-12);
    // A deterministic cycle is learnt: loss near zero.
    let cycle: Vec<u32> = (0..3000).map(|i| (i % 7) as u32).collect();
    let m = Markov::fit(&cycle, 3, 7, 0.01);
    assert!(m.loss(&cycle[..700]) < 0.01);
}

/// A small ABC "collection" in music21's layout: `essenFolksong/kinder0.abc` with `n` tunes.
fn tiny_corpus(dir: &Path, n: usize) {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    let letters = ["C", "D", "E", "F", "G", "A", "B", "c", "d", "e"];
    let mut text = String::new();
    for x in 1..=n {
        text += &format!("X:{x}\nT:Tune number {x}\nM:2/4\nL:1/8\nK:C\n");
        for _bar in 0..8 {
            for _ in 0..4 {
                text += letters[rng.gen_range(0..letters.len())];
            }
            text += " | ";
        }
        text += "\n\n";
    }
    let essen = dir.join("essenFolksong");
    std::fs::create_dir_all(&essen).unwrap();
    std::fs::write(essen.join("kinder0.abc"), text).unwrap();
}

#[derive(clap::Parser)]
struct TrainCli {
    #[command(flatten)]
    args: cadenza::cli::train::Args,
}

fn train_cli(args: &[&str]) -> anyhow::Result<()> {
    use clap::Parser;
    let cli = TrainCli::try_parse_from(std::iter::once("train").chain(args.iter().copied()))?;
    cadenza::cli::train::run(cli.args)
}

#[test]
fn train_command_writes_a_loadable_model_with_its_card() {
    let tmp = tempfile::tempdir().unwrap();
    tiny_corpus(tmp.path(), 40);
    let out = tmp.path().join("models/tiny");
    let (corpus, out_s) = (tmp.path().to_str().unwrap(), out.to_str().unwrap());
    let common = [
        "--corpus",
        corpus,
        "--collections",
        "essen",
        "--layers",
        "1",
        "--dim",
        "32",
        "--heads",
        "2",
        "--context",
        "64",
        "--batch",
        "4",
        "--valid-fraction",
        "0.2",
        "--quiet",
        "--out",
        out_s,
    ];
    // The common arguments and then `extra`.
    let with = |extra: &[&'static str]| -> Vec<&str> { common.iter().chain(extra).copied().collect() };
    let read_report = || -> train::TrainReport {
        serde_json::from_str(&std::fs::read_to_string(out.join("train.json")).unwrap()).unwrap()
    };
    train_cli(&with(&["--arch", "gpt", "--max-steps", "3"])).unwrap();
    for f in ["config.json", "vocab.json", "model.safetensors", "README.md", "train.json", "commands.txt"] {
        assert!(out.join(f).exists(), "{f} missing");
    }
    let card = std::fs::read_to_string(out.join("README.md")).unwrap();
    for needle in ["## Data", "## Command", "3rd-order Markov chain", "bits per note", "parameters:"] {
        assert!(card.contains(needle), "card lacks `{needle}`:\n{card}");
    }
    let enc = cadenza::tokens::load(&out.join("vocab.json")).unwrap();
    let m = model::load(&out, &Device::Cpu).unwrap();
    assert_eq!(m.vocab_size(), enc.vocab().len());
    // --resume continues from step 3 with the saved vocabulary, and the card lists both commands.
    train_cli(&with(&["--arch", "gpt", "--max-steps", "5", "--resume"])).unwrap();
    let report = read_report();
    assert_eq!(report.steps, 5);
    let commands = std::fs::read_to_string(out.join("commands.txt")).unwrap();
    assert_eq!(commands.lines().count(), 2);
    // --evaluate scores the saved (best) weights on the same split: the loss training reported.
    let mut eval_args: Vec<&str> = common[..common.len() - 2].to_vec();
    eval_args.extend(["--evaluate", out_s]);
    let eval_cli = |a: &[&str]| {
        use clap::Parser;
        cadenza::cli::train::evaluate(
            &TrainCli::try_parse_from(std::iter::once("train").chain(a.iter().copied())).unwrap().args,
        )
    };
    let scored = eval_cli(&eval_args).unwrap();
    let best = report.best_val_loss.unwrap();
    assert!((scored[0].1.nats_per_id - best).abs() < 1e-5, "{} vs {best}", scored[0].1.nats_per_id);
    assert_eq!(scored[0].1.ids, report.val_tokens);
    // The weights in f16: half the bytes, the same loss to a few thousandths, still loadable.
    let f32_size = std::fs::metadata(out.join("model.safetensors")).unwrap().len();
    cadenza::cli::weights::run(cadenza::cli::weights::Args { model: out_s.into(), dtype: "f16".into(), out: None })
        .unwrap();
    let f16_size = std::fs::metadata(out.join("model.safetensors")).unwrap().len();
    assert!(f16_size * 10 < f32_size * 6, "{f16_size} vs {f32_size}");
    let half = eval_cli(&eval_args).unwrap()[0].1.nats_per_id;
    assert!((half - best).abs() < 5e-3, "{half} vs {best}");
    assert!(model::load(&out, &Device::Cpu).is_ok());
    // A model shipped with its best weights (in f16) and state.json but no checkpoint weights
    // resumes from those.
    std::fs::remove_file(out.join("checkpoints/model.safetensors")).unwrap();
    train_cli(&with(&["--arch", "gpt", "--max-steps", "6", "--resume"])).unwrap();
    assert_eq!(read_report().steps, 6);
    // A model with another vocabulary is refused, not scored.
    let other = tmp.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(out.join(f), other.join(f)).unwrap();
    }
    std::fs::write(other.join("vocab.json"), r#"{"tokens": ["<pad>"]}"#).unwrap();
    let mut mixed = eval_args.clone();
    mixed.push(other.to_str().unwrap());
    let err = format!("{:#}", eval_cli(&mixed).expect_err("another vocabulary is refused"));
    assert!(err.contains("vocab.json"), "{err}");
    // A bad architecture is an error, not a panic.
    let err = train_cli(&with(&["--arch", "transformer-xl"])).err().unwrap().to_string();
    assert!(err.contains("unknown --arch"), "{err}");
}
