"""The one error the bbolt package raises: a file that is not a valid bbolt database, or input the
writer cannot encode. The message names the file (when known), the page and the problem."""

from __future__ import annotations


class BboltError(Exception):
    """A bbolt file is damaged or not a bbolt file, or the writer was given what bbolt cannot hold."""

    def __init__(self, problem: str, page: int | None = None, file: str | None = None) -> None:
        self.problem = problem
        self.page = page
        self.file = file
        where = f"page {page}: " if page is not None else ""
        prefix = f"bbolt file {file}: " if file else "bbolt: "
        super().__init__(f"{prefix}{where}{problem}")
