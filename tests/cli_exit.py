"""The one-line message a refused command-line call exits with (shared by the reliability tests)."""

import pytest

from amdim_lib.__main__ import main


def exit_message(argv) -> str:
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    assert stopped.value.code not in (0, None)
    return str(stopped.value.code)
