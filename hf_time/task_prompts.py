"""Prompt versions of the built-in tasks, for causal LMs (classification as generation).

Each ``<task>_prompt`` task reads the data of ``<task>``, cut into the same train and test items,
and continues a short labelled record (``Review: ...\nSentiment:``) with the verbalizer of the
label. That record form was chosen by measurement: with SmolLM2-135M-Instruct, a question form
("Is this review positive or negative?\nAnswer:") scored at chance on movie reviews and BBC topics
(0.55 and 0.22 on 60 test items) where the record form scored 0.85 and 0.75, and rendering the
question as a chat turn did not help (0.52, 0.32). Zero-shot accuracy of SmolLM2-135M-Instruct on
these prompts: ``benchmarks/lm_training.md``. Over-long texts lose their beginning (prompts are
truncated from the left), never the label field.
"""

from __future__ import annotations

from hf_time.task_registry import register_prompt_task

_SENTIMENT = {"negative": "negative", "positive": "positive"}
for _name, _field in (("movie_sentiment", "Movie review"), ("tweet_sentiment", "Tweet"),
                      ("amazon_sentiment", "Product review"), ("nyt_sentiment", "Newspaper editorial")):
    register_prompt_task(f"{_name}_prompt", source=_name, template=f"{_field}: {{text}}\nSentiment:",
                         verbalizers=_SENTIMENT, summary=f"{_name} as a prompt: {_field.lower()} -> positive or negative")
del _name, _field

# No record form beat chance zero-shot on spam (SmolLM2-135M): this one gives the true answer the
# highest likelihood, so it is the easiest to learn.
register_prompt_task(
    "sms_spam_prompt", source="sms_spam", summary="sms_spam as a prompt: does the message advertise a prize or offer?",
    template="Text message: {text}\nDoes this message advertise a prize or an offer? Answer:",
    verbalizers={"ham": "no", "spam": "yes"})

register_prompt_task(
    "trec_qtype_prompt", source="trec_qtype", summary="trec_qtype as a prompt: what a question asks for",
    template="Question: {text}\nThe question asks for a",
    verbalizers={"ABBR": "abbreviation", "DESC": "description", "ENTY": "thing", "HUM": "person", "LOC": "place",
                 "NUM": "number"})

register_prompt_task(
    "bbc_topic_prompt", source="bbc_topic", summary="bbc_topic as a prompt: the topic of a news article",
    template="Article: {text}\nTopic:",
    verbalizers={"business": "business", "entertainment": "entertainment", "politics": "politics",
                 "sport": "sport", "tech": "technology"})

register_prompt_task(
    "reuters_r8_prompt", source="reuters_r8", summary="reuters_r8 as a prompt: the topic of a news story",
    template="News story: {text}\nTopic:",
    verbalizers={"acq": "acquisitions", "crude": "crude oil", "earn": "earnings", "grain": "grain",
                 "interest": "interest rates", "money-fx": "currencies", "ship": "shipping", "trade": "trade"})

_LANGS = ("chinese", "dutch", "english", "italian", "japanese", "korean", "persian", "portuguese", "spanish", "ukrainian")
register_prompt_task(
    "langid10_prompt", source="langid10", summary="langid10 as a prompt: the language of a sentence",
    template="Sentence: {text}\nLanguage:", verbalizers={lang: lang.capitalize() for lang in _LANGS})
