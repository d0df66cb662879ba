//! MIDI input connections through the MIDI system this build plays on: midir's (ALSA, CoreMIDI,
//! WinMM), or with `--features jack` cadenza's own JACK client.
//!
//! Why not midir's JACK input: when its connection closes it unregisters its port first and
//! deactivates its client after, so a process callback still running reads a port that is gone
//! (a segfault, about one run in a dozen of the JACK tests, and in CI). The `jack` crate's
//! client deactivates before it drops its ports; its callbacks have stopped when the drop
//! returns.

use crate::play::transport::PlayError;

/// What a connection calls for each message: its time in µs (the input's own clock: good for
/// intervals, not comparable with the engine's) and its bytes. It runs on the MIDI system's
/// thread (JACK's process thread with `--features jack`): it must be quick.
pub type InputCallback = Box<dyn FnMut(u64, &[u8]) + Send + 'static>;

/// An open MIDI input. Dropping it disconnects; no callback runs after the drop returns.
pub struct InputConnection {
    /// Held for its drop, which disconnects.
    #[cfg(not(feature = "jack"))]
    _midir: midir::MidiInputConnection<()>,
    #[cfg(feature = "jack")]
    _jack: jack::AsyncClient<(), jack_in::Reader>,
}

/// Connects input port `own_port` of cadenza's client to another program's output `wanted`
/// (index, exact name or unique substring); returns the connection and the full name of the
/// port it listens to.
pub fn connect_input(
    wanted: &str,
    own_port: &str,
    callback: InputCallback,
) -> Result<(InputConnection, String), PlayError> {
    #[cfg(feature = "jack")]
    return jack_in::open(own_port, Some(wanted), callback);
    #[cfg(not(feature = "jack"))]
    {
        let input = midir_input()?;
        let ports = input.ports();
        let names: Vec<String> = ports.iter().map(|p| input.port_name(p).unwrap_or_default()).collect();
        let i = crate::sink::out::pick_port(&names, wanted)?;
        let mut callback = callback;
        let conn = input
            .connect(&ports[i], own_port, move |us, bytes, _| callback(us, bytes), ())
            .map_err(|e| PlayError::Input(format!("cannot connect to `{}`: {e}", names[i])))?;
        Ok((InputConnection { _midir: conn }, names[i].clone()))
    }
}

/// Opens cadenza's input port `name` for other programs (a keyboard's driver, a DAW) to play into.
pub fn virtual_input(name: &str, callback: InputCallback) -> Result<InputConnection, PlayError> {
    #[cfg(feature = "jack")]
    return jack_in::open(name, None, callback).map(|(conn, _)| conn);
    #[cfg(all(unix, not(feature = "jack")))]
    {
        use midir::os::unix::VirtualInput;
        let input = midir_input()?;
        let mut callback = callback;
        let conn = input
            .create_virtual(name, move |us, bytes, _| callback(us, bytes), ())
            .map_err(|e| PlayError::Input(format!("cannot open virtual input `{name}`: {e}")))?;
        Ok(InputConnection { _midir: conn })
    }
    #[cfg(all(not(unix), not(feature = "jack")))]
    {
        let _ = callback;
        Err(PlayError::Input(format!("cannot open virtual input `{name}`: virtual ports need ALSA or JACK")))
    }
}

/// A midir client that passes every message on, MIDI clock included (midir's default filters
/// nothing either; said here so that a change of default cannot silently deafen `follow_clock`).
#[cfg(not(feature = "jack"))]
fn midir_input() -> Result<midir::MidiInput, PlayError> {
    let mut input =
        midir::MidiInput::new(crate::sink::out::CLIENT_NAME).map_err(|e| PlayError::Input(e.to_string()))?;
    input.ignore(midir::Ignore::None);
    Ok(input)
}

/// The JACK side: one client per input, its port read in the process callback.
#[cfg(feature = "jack")]
mod jack_in {
    use super::{InputCallback, InputConnection};
    use crate::play::transport::PlayError;
    use crate::sink::jack_out::read_dated;

    /// Reads the port each period and hands every message, dated at its frame, to the callback.
    pub struct Reader {
        port: jack::Port<jack::MidiIn>,
        callback: InputCallback,
    }

    impl jack::ProcessHandler for Reader {
        fn process(&mut self, client: &jack::Client, ps: &jack::ProcessScope) -> jack::Control {
            read_dated(&self.port, client, ps, &mut self.callback);
            jack::Control::Continue
        }
    }

    fn jack_error(e: jack::Error) -> PlayError {
        PlayError::Input(format!("JACK: {e} (is a JACK server running?)"))
    }

    /// Registers input port `own_port` and, when `wanted` is given, connects the MIDI output
    /// it names to it.
    pub fn open(
        own_port: &str,
        wanted: Option<&str>,
        callback: InputCallback,
    ) -> Result<(InputConnection, String), PlayError> {
        let (client, _) = jack::Client::new(crate::sink::out::CLIENT_NAME, jack::ClientOptions::NO_START_SERVER)
            .map_err(jack_error)?;
        let port = client
            .register_port(own_port, jack::MidiIn::default())
            .map_err(|e| PlayError::Input(format!("cannot open input `{own_port}`: {e}")))?;
        let own = port.name().map_err(jack_error)?;
        let source = match wanted {
            Some(w) => {
                let names = client.ports(None, Some("midi"), jack::PortFlags::IS_OUTPUT);
                Some(names[crate::sink::out::pick_port(&names, w)?].clone())
            }
            None => None,
        };
        let active = client.activate_async((), Reader { port, callback }).map_err(jack_error)?;
        if let Some(s) = &source {
            active
                .as_client()
                .connect_ports_by_name(s, &own)
                .map_err(|e| PlayError::Input(format!("cannot connect to `{s}`: {e}")))?;
        }
        Ok((InputConnection { _jack: active }, source.unwrap_or(own)))
    }
}
