//! `cadenza score`: log-likelihood of scores under a model, per note and per bar.

use crate::gen::Generator;
use std::path::PathBuf;

/// Arguments of this command.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Bundled model name or model folder.
    #[arg(long, short = 'm', default_value = crate::model::DEFAULT_MODEL)]
    pub model: String,
    /// Print one JSON object per file instead of text.
    #[arg(long)]
    pub json: bool,
    /// Scores to rate (.abc, .mid).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let gen = Generator::load(&args.model)?;
    let mut failed = 0;
    for path in &args.files {
        let result = super::generate::read_score(path).and_then(|s| Ok(gen.likelihood(&s)?));
        match result {
            Ok(l) if args.json => {
                let mut v = serde_json::to_value(&l)?;
                v["file"] = serde_json::Value::String(path.display().to_string());
                if let Some(o) = v.as_object_mut() {
                    o.remove("per_token");
                }
                println!("{}", serde_json::to_string(&v)?);
            }
            Ok(l) => {
                println!(
                    "{}: {} notes, {} tokens, log-likelihood {:.2} nats, {:.3} per note ({:.2} bits/note)",
                    path.display(),
                    l.notes,
                    l.tokens,
                    l.total,
                    l.per_note,
                    l.bits_per_note()
                );
                let bars: Vec<String> = l.bars.iter().map(|b| format!("{:.2}", b.surprise)).collect();
                println!("  surprise per bar (NLL per note): {}", bars.join(" "));
            }
            Err(e) => {
                failed += 1;
                // Reading errors name the file already; others get it in front.
                let msg = super::report(&e);
                let name = path.display().to_string();
                if msg.contains(&name) {
                    eprintln!("{msg}");
                } else {
                    eprintln!("{name}: {msg}");
                }
            }
        }
    }
    if failed > 0 {
        anyhow::bail!("{failed} of {} files could not be scored", args.files.len());
    }
    Ok(())
}
