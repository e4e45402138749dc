"""Statement splitting: semicolons inside quotes, identifiers and comments."""

from __future__ import annotations

import pytest
from durable.sqltext import split_statements
from hypothesis import given
from hypothesis import strategies as st


@pytest.mark.parametrize(
    ("sql", "count"),
    [
        ("select 1", 1),
        ("select 1;", 1),
        ("  select 1 ;  -- trailing comment\n", 1),
        ("select 1; drop table x", 2),
        ("select ';'", 1),
        ("select 'it''s; fine'", 1),
        ("select E'a\\'; b'", 1),
        ("select e'\\\\'; select 2", 2),
        ('select 1 as ";"', 1),
        ('select 1 as "a"";"', 1),
        ("select $$;$$", 1),
        ("select $tag$ $$ ; $tag$", 1),
        ("select $1; select $2", 2),
        ("select 1 -- ;\n", 1),
        ("select 1 /* ; /* nested ; */ ; */", 1),
        ("select 1 /* ; */; select 2", 2),
        ("select 1;;;", 1),
        ("", 0),
        ("-- only a comment", 0),
        ("create function f() returns int language sql as $f$ select 1; $f$", 1),
        ("select a$b; select 2", 2),
    ],
)
def test_statement_count(sql, count):
    assert len(split_statements(sql)) == count


SAFE_TEXT = st.text(alphabet=st.characters(blacklist_characters="'\\"), max_size=30)


@given(SAFE_TEXT)
def test_semicolons_inside_a_string_constant_never_split(text):
    assert len(split_statements(f"select '{text}'")) == 1


@given(
    st.lists(st.sampled_from(["select 1", "select 'a;b'", 'select ";"']), min_size=1)
)
def test_joined_statements_split_back(parts):
    assert len(split_statements("; ".join(parts))) == len(parts)
