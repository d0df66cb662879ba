//! Training corpora: fetches nothing, reads the unpacked music21 corpus into labelled Scores and splits it.
