"""Prompt versions of the built-in tasks, for causal LMs (classification as generation).

Each ``<task>_prompt`` task reads the data of ``<task>``, cut into the same train and test items, and
asks a question whose answer is one word or two: the verbalizer of the label. Prompts end with
``Answer:`` and verbalizers are lowercase words (capitalised language names), so a small
instruction-tuned model (SmolLM2-135M-Instruct) is above chance on most of them zero-shot.
Over-long texts lose their beginning (prompts are truncated from the left), never the question.
"""

from __future__ import annotations

from hf_time.task_registry import register_prompt_task

_QUESTION = "{what}: {{text}}\nQuestion: {question}\nAnswer:"

for _name, _noun in (("movie_sentiment", "movie review"), ("tweet_sentiment", "tweet"),
                     ("amazon_sentiment", "product review"), ("nyt_sentiment", "newspaper editorial")):
    register_prompt_task(
        f"{_name}_prompt", source=_name, summary=f"{_name} as a prompt: positive or negative {_noun}",
        template=_QUESTION.format(what=_noun.capitalize(), question=f"Is this {_noun} positive or negative?"),
        verbalizers={"negative": "negative", "positive": "positive"})
del _name, _noun

register_prompt_task(
    "sms_spam_prompt", source="sms_spam", summary="sms_spam as a prompt: is this message spam? yes or no",
    template=_QUESTION.format(what="Text message", question="Is this message spam? Answer yes or no."),
    verbalizers={"ham": "no", "spam": "yes"})

register_prompt_task(
    "trec_qtype_prompt", source="trec_qtype", summary="trec_qtype as a prompt: what a question asks for",
    template=_QUESTION.format(what="Question", question="Does it ask for an abbreviation, a description, an entity, "
                                                        "a person, a location or a number?"),
    verbalizers={"ABBR": "abbreviation", "DESC": "description", "ENTY": "entity", "HUM": "person",
                 "LOC": "location", "NUM": "number"})

register_prompt_task(
    "bbc_topic_prompt", source="bbc_topic", summary="bbc_topic as a prompt: the topic of a news article",
    template=_QUESTION.format(what="Article", question="Is this news article about business, entertainment, "
                                                       "politics, sport or technology?"),
    verbalizers={"business": "business", "entertainment": "entertainment", "politics": "politics",
                 "sport": "sport", "tech": "technology"})

register_prompt_task(
    "reuters_r8_prompt", source="reuters_r8", summary="reuters_r8 as a prompt: the topic of a news story",
    template=_QUESTION.format(what="News story", question="Is it about acquisitions, crude oil, earnings, grain, "
                                                          "interest rates, currencies, shipping or trade?"),
    verbalizers={"acq": "acquisitions", "crude": "crude oil", "earn": "earnings", "grain": "grain",
                 "interest": "interest rates", "money-fx": "currencies", "ship": "shipping", "trade": "trade"})

_LANGS = ("chinese", "dutch", "english", "italian", "japanese", "korean", "persian", "portuguese", "spanish", "ukrainian")
register_prompt_task(
    "langid10_prompt", source="langid10", summary="langid10 as a prompt: the language of a sentence",
    template=_QUESTION.format(what="Sentence", question="Which language is this sentence in?"),
    verbalizers={lang: lang.capitalize() for lang in _LANGS})
