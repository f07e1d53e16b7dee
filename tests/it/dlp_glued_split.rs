//! Personal data glued to a word, and data split across the events of one call's stream.
