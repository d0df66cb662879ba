//! MIDI ports as the transport knows them: output slots and the watcher that reconnects a port
//! that vanished; the MIDI input a player plays into ([`input`]) and the incoming MIDI clock the
//! tempo can follow ([`clock_sync`]), both through the input connections of [`midi_in`].

pub mod clock_sync;
pub mod input;
pub mod midi_in;

use super::event::MAX_PORTS;
use super::sequencer::{Command, Report};
use super::transport::PlayError;
use crate::sink::out::MidiOut;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// An output slot as the engine knows it.
#[derive(Debug, Clone)]
pub(super) struct Slot {
    pub(super) name: String,
    pub(super) reconnect: Option<String>,
    pub(super) vanished: bool,
}

pub(super) fn slot_of(out: &dyn MidiOut) -> Slot {
    Slot { name: out.name().to_string(), reconnect: out.reconnect_name().map(str::to_string), vanished: false }
}

pub(super) fn slots_of(outputs: &[Box<dyn MidiOut>]) -> Result<Vec<Option<Slot>>, PlayError> {
    if outputs.len() > MAX_PORTS {
        return Err(PlayError::NoSlot(MAX_PORTS));
    }
    Ok(outputs.iter().map(|o| Some(slot_of(&**o))).collect())
}

/// Watches connected ports: reports one that vanished and reconnects when it returns.
pub(super) fn spawn_watcher(
    slots: Arc<Mutex<Vec<Option<Slot>>>>,
    commands: Sender<Command>,
    reports: Sender<Report>,
    closing: Arc<AtomicBool>,
) -> Option<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("cadenza-ports".into())
        .spawn(move || {
            let mut since = std::time::Instant::now();
            // One client for listing, kept: opening one a second is heavy on JACK.
            let mut lister: Option<midir::MidiOutput> = None;
            while !closing.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(50));
                if since.elapsed() < Duration::from_secs(1) {
                    continue;
                }
                since = std::time::Instant::now();
                let wanted: Vec<(usize, Slot)> = {
                    let s = slots.lock().unwrap_or_else(|p| p.into_inner());
                    s.iter()
                        .enumerate()
                        .filter_map(|(i, s)| s.clone().filter(|s| s.reconnect.is_some()).map(|s| (i, s)))
                        .collect()
                };
                if wanted.is_empty() {
                    continue;
                }
                if lister.is_none() {
                    lister = midir::MidiOutput::new("cadenza-watch").ok();
                }
                let Some(l) = &lister else { continue };
                let names: Vec<String> = l.ports().iter().filter_map(|p| l.port_name(p).ok()).collect();
                for (i, slot) in wanted {
                    let Some(target) = slot.reconnect.clone() else { continue };
                    let present = names.contains(&target);
                    if !present && !slot.vanished {
                        let _ = reports.send(Report::PortVanished { port: target.clone() });
                        set_vanished(&slots, i, true);
                    } else if present && slot.vanished {
                        if let Ok(out) = crate::sink::out::connect_output(&target) {
                            let _ = commands.send(Command::SetOutput(i as u8, out));
                            let _ = reports.send(Report::PortBack { port: target.clone() });
                            set_vanished(&slots, i, false);
                        }
                    }
                }
            }
        })
        .ok()
}

fn set_vanished(slots: &Mutex<Vec<Option<Slot>>>, i: usize, v: bool) {
    let mut s = slots.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(Some(slot)) = s.get_mut(i) {
        slot.vanished = v;
    }
}
