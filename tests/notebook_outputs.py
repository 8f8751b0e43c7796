"""What an executed notebook printed (shared by the notebook tests)."""

import nbformat


def stderr_of(executed) -> list[str]:
    """The text of every stderr output of an executed notebook: warnings and stray messages land there."""
    notebook = nbformat.read(executed, as_version=4)
    return [o.get("text", "") for c in notebook.cells if c.cell_type == "code"
            for o in c.get("outputs", []) if o.get("name") == "stderr"]
