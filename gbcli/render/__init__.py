"""Views of task results: a Rich renderable for people and JSON for scripts, from the same object.

`export` writes attention to files (JSON, NPZ, PNG, HTML); `messages` the `error:`, `hint:` and `warning:` lines.
A view never computes model outputs: it may import `tasks` (their result dataclasses), `lm` (their settings),
`loading` (model names and families), `terminal` and `gbcli.errors`, never `cli`, `warm` or `jobs`.
"""
