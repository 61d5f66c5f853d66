"""gbcli's written-out speed paths and the checks that decide whether each may run on the installed libraries.

Each speed path leans on names transformers or torch keep private; `capability` decides once per process, per
path, whether those names are there as the path expects them, and otherwise the public path runs.
"""
