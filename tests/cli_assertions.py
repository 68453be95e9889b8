"""Assertions shared by the command-line tests."""


def assert_one_line_error(capsys, code: int, fragment: str) -> str:
    """Assert exit status 2 and one stderr line containing ``fragment``; return the line."""
    err = capsys.readouterr().err
    assert code == 2, err
    assert fragment in err
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
    return err.strip()
