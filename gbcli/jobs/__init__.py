"""File input and output: labelled data for probes (`labelled`, `builtin_tasks`) and the cache of hidden states."""
