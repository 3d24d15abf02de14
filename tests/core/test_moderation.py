"""The prompt blocklist: evasions are refused, near misses pass, and the member never learns the entry."""

from __future__ import annotations

import dataclasses
import random
import string

import pytest

from abby_core.errors import ConfigError, InvalidPrompt
from abby_core.moderation import REFUSAL, Blocklist, Match, normalize

ENTRIES = ["bad", "ass", "sex", "cunt", "cock", "god", r"re:\bk[i1]ll(?:s|ed|ing)?\b"]


@pytest.fixture(scope="module")
def blocklist() -> Blocklist:
    return Blocklist(ENTRIES)


def matched(blocklist: Blocklist, prompt: str) -> str | None:
    found = blocklist.find(prompt)
    return found.entry if found else None


# -- refusals ---------------------------------------------------------------------------------


EVASIONS: dict[str, list[tuple[str, str | None]]] = {
    "plain": [("bad", "bad"), ("a bad idea", "bad"), ("(bad)", "bad"), ('"bad"', "bad"), ("#bad", "bad")],
    "mixed case": [("BAD", "bad"), ("bAd!", "bad"), ("SeX", "sex"), ("KILL", "re:")],
    "accents": [
        ("bàd", "bad"),
        ("bäd", "bad"),
        ("bâd", "bad"),
        ("séx", "sex"),
        ("kíll", "re:"),
        ("b\u0336a\u0336d", "bad"),
    ],
    "zero-width and format characters": [
        ("b\u200bad", "bad"),  # zero-width space
        ("b\u200dad", "bad"),  # zero-width joiner
        ("b\u200cad", "bad"),  # zero-width non-joiner
        ("b\u00adad", "bad"),  # soft hyphen
        ("b\u2060ad", "bad"),  # word joiner
        ("\ufeffbad", "bad"),  # byte order mark
        ("b\u202ead\u202c", "bad"),  # bidi override
        ("b\u2066a\u2069d", "bad"),  # bidi isolate
        ("ba\ufe0fd", "bad"),  # variation selector
        ("s\U000e0041ex", "sex"),  # tag character
        ("b\u3164ad", "bad"),  # Hangul filler
    ],
    "Cyrillic homoglyphs": [
        ("b\u0430d", "bad"),  # а
        ("\u0455\u0435\u0445", "sex"),  # ѕ е х
        ("\u0405\u0415\u0425", "sex"),  # Ѕ Е Х
        ("\u0441unt", "cunt"),  # с
        ("\u0441\u043e\u0441k", "cock"),  # с о с
        ("\u0430\u0455\u0455", "ass"),  # а ѕ ѕ
        ("b\u0430\u0501", "bad"),  # а ԁ
    ],
    "Greek homoglyphs": [
        ("b\u03b1d", "bad"),  # α
        ("c\u03bfck", "cock"),  # ο
        ("\u039a\u0399LL", "re:"),  # Κ Ι
        ("c\u03bcnt", "cunt"),  # μ
        ("c\u03bf\u03f2k", "cock"),  # ο ϲ
    ],
    "fullwidth": [("ｂａｄ", "bad"), ("ＳＥＸ", "sex"), ("ｋｉｌｌ", "re:")],
    "mathematical letters": [("𝐛𝐚𝐝", "bad"), ("𝒔𝒆𝒙", "sex"), ("𝔠𝔲𝔫𝔱", "cunt"), ("𝙠𝙞𝙡𝙡", "re:")],
    "other compatibility forms": [("ⓑⓐⓓ", "bad"), ("ʙᴀᴅ", "bad"), ("\U0001f1e7\U0001f1e6\U0001f1e9", "bad")],
    "leetspeak": [
        ("b4d", "bad"),
        ("8@d", "bad"),
        ("s3x", "sex"),
        ("$3x", "sex"),
        ("5ex", "sex"),
        ("@$$", "ass"),
        ("a55", "ass"),
        ("c0ck", "cock"),
        ("g0d", "god"),
        ("k1ll", "re:"),
        ("bad1", None),  # a digit glued to the word makes another word; see the word-boundary test
    ],
    "separators": [
        ("b.a.d", "bad"),
        ("b a d", "bad"),
        ("b-a-d", "bad"),
        ("b_a_d", "bad"),
        ("b*a*d", "bad"),
        ("b...a...d", "bad"),
        ("b . a . d", "bad"),
        ("b\ta\nd", "bad"),
        ("s.e.x", "sex"),
        ("a s s", "ass"),
        ("c-u-n-t", "cunt"),
        ("se*x", "sex"),
    ],
    "stretched letters": [("baaad", "bad"), ("BAAAAAAAAD", "bad"), ("sexxx", "sex"), ("asssss", "ass")],
    "combined": [("Ｂ.\u0430.\u200bD", "bad"), ("\u0455 3 \u0445", "sex"), ("𝐛4\u0301𝐝", "bad"), ("b4444d", "bad")],
}


@pytest.mark.parametrize(
    ("prompt", "entry"),
    [
        pytest.param(prompt, entry, id=f"{kind}: {prompt!a}")
        for kind, cases in EVASIONS.items()
        for prompt, entry in cases
    ],
)
def test_evasions_are_refused(blocklist: Blocklist, prompt: str, entry: str | None) -> None:
    found = matched(blocklist, prompt)
    if entry is None:
        assert found is None
    elif entry == "re:":
        assert found is not None and found.startswith("re:")
    else:
        assert found == entry


def test_check_refuses_with_a_message_that_names_nothing(blocklist: Blocklist) -> None:
    for prompt in ["a bad idea", "s.e.x", "\u0441unt", "k1ll it"]:
        entry = matched(blocklist, prompt)
        assert entry is not None
        with pytest.raises(InvalidPrompt) as refused:
            blocklist.check(prompt)
        error = refused.value
        assert error.code == "invalid_prompt"
        assert str(error) == error.message == REFUSAL
        shown = " ".join([str(error), repr(error), *map(str, error.args)]).lower()
        assert entry.lower() not in shown and prompt.lower() not in shown
        assert error.__cause__ is None and error.__context__ is None


def test_refusal_wording_never_contains_any_entry() -> None:
    lowered = REFUSAL.lower()
    assert not any(word in lowered.split() for word in ("bad", "ass", "sex", "god", "kill"))
    assert "blocklist" not in lowered and "entry" not in lowered


def test_repr_does_not_list_the_entries(blocklist: Blocklist) -> None:
    assert repr(blocklist) == f"<Blocklist with {len(ENTRIES)} entries>"


# -- near misses --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "prompt",
    [
        "a classic class portrait",
        "a glass of water, grass, brass",
        "a passage in the bass clef",
        "an assassin's embassy",
        "Scunthorpe United",
        "the coast of Essex and Sussex, Middlesex",
        "a peacock eating cocktail shrimp, Hitchcock style",
        "badge, badminton, Baghdad, abadeh",
        "a shiitake mushroom",
        "good morning, goodness",  # "god": a doubled letter is not a stretch
        "a skilled skillet",
        "his ex bass player",  # "s ex": spaces split a word only when every letter is on its own
        "ba d weather",
        "baad, baaddie",  # two letters are a spelling, three or more a stretch
        "c1ass and gl4ss",  # a leetspoken letter stays part of its word
        "m@ss, cl@ss, p4ss",
        "bad2 and bad1",  # a digit glued to the word makes it another word
        "b.a.a.a.d",  # a stretch is one unbroken run
        "",
        "🙂👍🏽",
    ],
)
def test_near_misses_pass(blocklist: Blocklist, prompt: str) -> None:
    assert blocklist.find(prompt) is None
    blocklist.check(prompt)


def test_doubled_letters_match_only_doubled_or_more() -> None:
    blocklist = Blocklist(["ass", "god"])
    assert matched(blocklist, "as") is None
    assert matched(blocklist, "ass") == matched(blocklist, "asss") == "ass"
    assert matched(blocklist, "good") is None
    assert matched(blocklist, "goood") == "god"


def test_phrases_allow_any_separation_between_words() -> None:
    blocklist = Blocklist(["bad word"])
    for prompt in [
        "bad word",
        "BAD   WORD",
        "bad-word",
        "bad_word",
        "badword",
        "bad\nword",
        "b.a.d w.o.r.d",
        "b a d w o r d",
    ]:
        assert matched(blocklist, prompt) == "bad word", prompt
    for prompt in ["bad", "word", "bad sword", "badwords", "a bad, bad world"]:
        assert matched(blocklist, prompt) is None, prompt


def test_scripts_written_without_spaces_match_inside_text() -> None:
    blocklist = Blocklist(["日本", "bad"])
    assert matched(blocklist, "日本語") == "日本"
    assert matched(blocklist, "这个bad东西") == "bad"  # a Han letter next to a Latin word is a boundary
    assert matched(blocklist, "本日") is None


def test_digits_in_an_entry_match_only_digits() -> None:
    blocklist = Blocklist(["1488"])
    assert matched(blocklist, "the 1488 logo") == "1488"
    assert matched(blocklist, "the iabb logo") is None
    assert matched(blocklist, "21488") is None


# -- regular expressions ---------------------------------------------------------------------------


def test_regexes_search_the_normalised_prompt_ignoring_case() -> None:
    blocklist = Blocklist([r"re:\bk[i1]ll\b", "re:BAD", r"re:\d{4}-\d{4}"])
    assert matched(blocklist, "KÍLL") == r"re:\bk[i1]ll\b"
    assert matched(blocklist, "k\u0456ll") == r"re:\bk[i1]ll\b"  # Cyrillic і
    assert matched(blocklist, "skill") is None
    assert matched(blocklist, "no bad") == "re:BAD"  # no word boundary was asked for: "notbad" too
    assert matched(blocklist, "notbad") == "re:BAD"
    assert matched(blocklist, "call 1234-5678") == r"re:\d{4}-\d{4}"  # digits stay digits for regexes


def test_regexes_with_groups_backreferences_or_global_flags() -> None:
    blocklist = Blocklist(["re:(foo|bar)baz", r"re:\b(\w)\1{4,}\b", "re:(?x) q u u x", "re:(?P<name>zz)top"])
    assert matched(blocklist, "a barbaz") == "re:(foo|bar)baz"
    assert matched(blocklist, "mmmmm") == r"re:\b(\w)\1{4,}\b"
    assert matched(blocklist, "quux") == "re:(?x) q u u x"
    assert matched(blocklist, "zztop") == "re:(?P<name>zz)top"
    assert matched(blocklist, "foo baz, mmmm, q u u x") is None


def test_each_match_names_the_entry_that_matched() -> None:
    blocklist = Blocklist(["ba", "bad", "bade", "bad word", "re:zz+", "re:(x)yx", "dab"])
    assert matched(blocklist, "bade") == "bade"
    assert matched(blocklist, "ba") == "ba"
    assert matched(blocklist, "baddie or bad") == "bad"
    assert matched(blocklist, "badword") == "bad word"
    assert matched(blocklist, "buzz") == "re:zz+"
    assert matched(blocklist, "xyx") == "re:(x)yx"
    assert matched(blocklist, "d.a.b") == "dab"


def test_match_is_frozen_and_its_span_points_into_the_normalised_prompt() -> None:
    blocklist = Blocklist(["bad"])
    prompt = "Quite a Ｂ.\u0430.D idea"
    found = blocklist.find(prompt)
    assert isinstance(found, Match) and found.entry == "bad"
    start, end = found.span
    assert normalize(prompt)[start:end] == "b.a.d"
    with pytest.raises(dataclasses.FrozenInstanceError):
        found.entry = "other"  # type: ignore[misc]


def test_the_reported_entry_really_matches_there() -> None:
    """Many overlapping entries in one trie: each match is credited to an entry that matches alone."""
    rng = random.Random(20240601)
    alphabet = "abeiostlgdk"
    words = sorted({"".join(rng.choice(alphabet) for _ in range(rng.randint(1, 5))) for _ in range(300)})
    blocklist = Blocklist([*words, *(f"{a} {b}" for a, b in zip(words[:40], words[40:80], strict=True))])
    checked = 0
    for _ in range(1500):
        prompt = "".join(rng.choice(alphabet + alphabet.upper() + "4@$0137 .-_!") for _ in range(rng.randint(1, 30)))
        found = blocklist.find(prompt)
        if found is not None:
            alone = Blocklist([found.entry]).find(prompt)
            assert alone is not None and alone.span[0] <= found.span[0], (prompt, found)
            checked += 1
    assert checked > 100


# -- building --------------------------------------------------------------------------------------

FILE = """\ufeff# Words this server does not allow.
bad

   # an indented comment
  sex  \r
bad word
re:\\bk[i1]ll\\b
re: foo#bar
#re:(unclosed
"""


def test_file_parsing_skips_comments_and_blank_lines() -> None:
    blocklist = Blocklist.from_text(FILE)
    assert blocklist.entries == ("bad", "sex", "bad word", r"re:\bk[i1]ll\b", "re: foo#bar")
    assert len(blocklist) == 5 and blocklist
    assert matched(blocklist, "FOO#BAR") == "re: foo#bar"  # "#" inside an entry is kept
    assert matched(blocklist, "unclosed") is None


def test_an_invalid_regex_names_its_line_and_entry() -> None:
    text = "bad\n# fine\nre:(unclosed\nsex\n"
    with pytest.raises(ConfigError) as failed:
        Blocklist.from_text(text, source="blocklist.txt")
    assert failed.value.problems == [
        "blocklist.txt, line 3: 're:(unclosed' is not a valid regular expression "
        "(missing ), unterminated subpattern at position 0)."
    ]
    assert "line 3" in failed.value.message and "re:(unclosed" in failed.value.message


def test_every_invalid_entry_is_reported_at_once() -> None:
    text = "re:[a-\nok\nre:\nre:a*\n!!!\nre:\\b\n"
    with pytest.raises(ConfigError) as failed:
        Blocklist.from_text(text, source="list")
    problems = failed.value.problems
    assert [p.split(":", 1)[0] for p in problems] == [
        "list, line 1",
        "list, line 3",
        "list, line 4",
        "list, line 5",
        "list, line 6",
    ]
    assert "not a valid regular expression" in problems[0]
    assert "empty regular expression" in problems[1]
    assert "matches empty text" in problems[2] and "matches empty text" in problems[4]
    assert "no letter or digit" in problems[3]
    assert failed.value.message.startswith("list has 5 invalid entries: ")


def test_from_settings_combines_the_setting_and_the_file() -> None:
    blocklist = Blocklist.from_settings(["bad", " ", "re:zz+"], "# file\nsex\n")
    assert blocklist.entries == ("bad", "re:zz+", "sex")
    assert matched(blocklist, "s e x") == "sex" and matched(blocklist, "buzz") == "re:zz+"
    assert Blocklist.from_settings(["bad"], None).entries == ("bad",)

    with pytest.raises(ConfigError) as failed:
        Blocklist.from_settings(["bad", "re:("], "ok\n\nre:)\n")
    assert [p.split(": ")[0] for p in failed.value.problems] == [
        "PROMPT_BLOCKLIST entry 2",
        "the PROMPT_BLOCKLIST file, line 3",
    ]
    with pytest.raises(ConfigError, match="MY_LIST entry 1"):
        Blocklist.from_settings(["re:["], None, source="MY_LIST")


@pytest.mark.parametrize(
    "empty",
    [
        Blocklist(),
        Blocklist([]),
        Blocklist.from_settings([], None),
        Blocklist.from_text("# nothing\n\n  \n"),
        Blocklist([" ", "#x"]),
    ],
)
def test_an_empty_blocklist_allows_everything(empty: Blocklist) -> None:
    assert len(empty) == 0 and not empty and empty.entries == ()
    for prompt in ["bad", "s.e.x", "", "k1ll", "\u200b", "a" * 10_000]:
        assert empty.find(prompt) is None
        empty.check(prompt)


# -- normalisation ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "skeleton"),
    [
        ("Hello World", "hello world"),
        ("ＡＢＣ１２３", "abc123"),
        ("𝐀𝐁𝐂 𝔞𝔟𝔠", "abc abc"),
        ("straße", "strasse"),
        ("İstanbul", "istanbul"),
        ("crème brûlée", "creme brulee"),
        ("ﬁne", "fine"),
        ("a\u200b\u200c\u200d\u2060\u00ad\ufeffb", "ab"),
        ("\u0410\u0412\u0421 \u0430\u0432\u0441", "abc abc"),  # Cyrillic А В С а в с
        ("\u0397\u03b7 \u039d\u03bd \u039c\u03bc", "hn nv mu"),  # Greek capitals look Latin capitals
        ("b4d @ $5", "b4d @ $5"),  # leetspeak is left to the patterns
        ("snake_case", "snake_case"),
    ],
)
def test_normalize(text: str, skeleton: str) -> None:
    assert normalize(text) == skeleton


# -- cost --------------------------------------------------------------------------------------


def test_a_thousand_entries_against_long_prompts_stays_linear() -> None:
    """No timing assertion: these inputs would take minutes if any step were quadratic or worse."""
    rng = random.Random(7)
    words = sorted(
        {"".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(3, 10))) for _ in range(1000)}
    )
    words += ["b" + "a" * 9 + "d", "aab", "bab", "xyzzy"]  # entries built to meet the pathological prompts below
    blocklist = Blocklist(words)
    assert len(blocklist) == len(words)

    innocent = " ".join(word + "q" for word in rng.choices(words, k=400))[:2000]
    assert blocklist.find(innocent) is None
    guilty = innocent[:1000] + " " + words[500] + " " + innocent[1000:]
    assert matched(blocklist, guilty) == words[500]

    for pathological in ["a" * 10_000, "a." * 5_000, "a " * 5_000, "@" * 10_000, "b" + "a" * 10_000, "ba." * 3_000]:
        assert blocklist.find(pathological + "c") is None
        assert matched(blocklist, pathological + " x.y.z.z.y") == "xyzzy"
