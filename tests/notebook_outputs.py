"""What an executed notebook printed (shared by the notebook tests)."""

import nbformat


def stderr_of(executed) -> list[str]:
    """The text of every stderr output of an executed notebook: warnings and stray messages land there."""
    notebook = nbformat.read(executed, as_version=4)
    return [o.get("text", "") for c in notebook.cells if c.cell_type == "code"
            for o in c.get("outputs", []) if o.get("name") == "stderr"]


def check_exercise_verdicts(executed) -> int:
    """Assert every exercise check ran: a reader's cell (its answer still None) says so, and its solution
    cell's answer is right by the run it follows. Returns how many checks ran."""
    notebook = nbformat.read(executed, as_version=4)
    checks = [c for c in notebook.cells if c.cell_type == "code" and "exercises.check(" in c.source]
    for cell in checks:
        printed = "".join(o.get("text", "") for o in cell.get("outputs", []) if o.get("name") == "stdout")
        solution = "solution" in cell.metadata.get("tags", [])
        expected = "is right" if solution else "no answer yet"
        assert expected in printed, f"{executed}: {'solution' if solution else 'reader'} check printed {printed!r}"
    return len(checks)
