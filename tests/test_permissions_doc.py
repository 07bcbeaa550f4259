"""The documented matrix is the enforced one."""

from pathlib import Path

from streams.permissions import MATRIX, Channel, Role


def test_docs_table_matches_matrix() -> None:
    doc = (Path(__file__).parent.parent / "docs" / "permissions.md").read_text()
    table = doc.split("<!-- matrix:start -->")[1].split("<!-- matrix:end -->")[0]
    rows = [line.strip("|").split("|") for line in table.strip().splitlines()[2:]]
    cells = {r[0].strip(): [c.strip() for c in r[1:]] for r in rows}

    def word(role: Role, ch: Channel) -> str:
        a = MATRIX[role][ch]
        return "read+write" if a.write else ("read" if a.read else "—")

    assert cells == {r.value: [word(r, c) for c in Channel] for r in Role}
    assert not MATRIX[Role.GUEST][Channel.BUDGET].read
    assert MATRIX[Role.VENDOR][Channel.TIMELINE].read
