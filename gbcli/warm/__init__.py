"""Warm models: one process keeps models loaded and answers command lines (`gbcli shell`, `gbcli serve`).

- `protocol`: the wire between a command and the server (the socket's place, JSON-lines messages, the build id);
- `client`: an ordinary command hands its work to a running server;
- `server`: the server's connections and its one-at-a-time request loop;
- `runner`: what the shell and the server share: run a command line by the CLI's own Typer app;
- `shell`: the interactive loop of `gbcli shell`;
- `manage`: the server from the outside: `serve --detach`, `ps`, `stop`.

`client` and `protocol` are what every command loads before deciding where to run: they import only the standard
library and `gbcli.errors`, never torch, transformers, numpy, Rich or Typer (the `warm-client` import contract in
pyproject.toml; tests/test_startup.py), and this `__init__` imports nothing. `runner`, `server` and `shell` run
command lines through the CLI's command tree, which the command that starts them gives them (`runner.Host`): the
room may import `render`, `tasks`, `lm`, `loading`, `terminal` and `gbcli.errors`, never `cli` or `jobs`.
"""
