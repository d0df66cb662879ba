//! The terminal front: line editing, history, completion, highlighting, printing from other threads.
