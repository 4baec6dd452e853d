"""A folder and a glob over it give the same documents: hidden files and folders (a name starting with ".") below
what the path names are skipped in both, as a shell glob skips them; named explicitly, they are read."""

import pytest

from llamabench.tasks.data import load_documents
from llamabench.tasks.spec import DatasetSource


def doc_ids(data_dir, local: str) -> list[str]:
    docs = load_documents(DatasetSource(local=local, format="text"), "my_task", data_dir)
    return [doc["doc_id"] for doc in docs]


@pytest.fixture
def books(tmp_path):
    files = ["a.txt", ".hidden.txt", ".git/HEAD", "sub/c.txt", "sub/.d.txt", ".cache/sub/e.txt", "sub/.x/f.txt"]
    for name in files:
        (tmp_path / "books" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "books" / name).write_text(f"text of {name}\n")
    return tmp_path


@pytest.mark.parametrize("spelling", ["books", "books/", "./books", "books/**", "books/**/*", "books/**/*.txt"])
def test_a_folder_and_globs_over_it_skip_the_same_hidden_files(books, spelling):
    assert doc_ids(books, spelling) == ["books/a.txt", "books/sub/c.txt"]


def test_hidden_files_and_folders_named_explicitly_are_read(books):
    assert doc_ids(books, "books/.hidden.txt") == ["books/.hidden.txt"]
    assert doc_ids(books, "books/.git") == ["books/.git/HEAD"]
    assert doc_ids(books, "books/.git/*") == ["books/.git/HEAD"]
    assert doc_ids(books, "books/sub/.x") == ["books/sub/.x/f.txt"]
    assert doc_ids(books, "books/.*.txt") == ["books/.hidden.txt"]
