"""Views of task results: a Rich renderable for people and JSON for scripts, from the same object."""
