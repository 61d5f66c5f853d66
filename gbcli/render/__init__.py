"""Views of task results: a Rich renderable for people and JSON for scripts, from the same object.

`export` writes attention to files (JSON, NPZ, PNG, HTML). A view never computes model outputs: it may import
`tasks` (their result dataclasses), `loading` (model names and families) and `gbcli.errors`, never `cli`, `lm`,
`warm` or `jobs`.
"""
