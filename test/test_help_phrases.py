"""Help phrases in transcripts: normalised whole words per language (no model needed)."""

import itertools

import pytest

from emotion_ros.audio.phrases import (DEFAULT_HELP_PHRASES, find_phrase, find_phrase_scored,
                                       normalize_text, parse_help_phrases)
from emotion_ros.errors import ConfigError

EN = parse_help_phrases(DEFAULT_HELP_PHRASES, ['en'])['en']

#: Words that sound or look like "help" and sentences built on them: never a call.
NEAR_WORDS = ['helpful', 'helmet', 'healthy', 'hello', 'held', 'hell', 'whelp', 'yelp',
              'helper', 'helping-hand', 'helpdesk', 'kelp', 'health', 'yellow', 'shelf']
CALM = ['Helpful tools are in the van.', 'The health of my helmet, it held well.',
        'Hello there, I will hold the yellow shelf.', 'The healthy whelp yelped at the bell.',
        'We are stopping over there for lunch.', 'Can anybody hear the music?',
        'Anybody here may hear the music.', 'We got out of here early yesterday.',
        'The old door is stuck again.', 'Helmets are stored over there.',
        'Hello, is the hotel near?', 'The weather is nice today and the sky is blue.']


def test_words_that_only_look_like_help_never_count():
    """'helpful', 'helmet', 'healthy', 'hello' and other look-alikes are not the word "help",
    alone, capitalised, with punctuation, or in sentences; nor are calm sentences calls."""
    for word, style in itertools.product(NEAR_WORDS, (str.lower, str.upper, str.title)):
        for text in (style(word), f'{style(word)}!', f'The {style(word)}, please.'):
            assert find_phrase(text, 'en', EN) == '', text
    for text in CALM:
        assert find_phrase(text, 'en', EN) == '', text


@pytest.mark.parametrize('phrase', EN)
def test_every_default_phrase_is_found_in_context_whatever_the_punctuation(phrase):
    """Each English phrase is found inside sentences, at any position, in any case, with
    punctuation between its words as Whisper writes it ('Help, me!' still holds 'help me')."""
    words = phrase.split()
    variants = [' '.join(words), ', '.join(words), ' '.join(words).upper(),
                '... '.join(w.capitalize() for w in words)]
    for variant, (before, after) in itertools.product(
            variants, [('', ''), ('Please! ', ''), ('', ' now!'), ('Oh no, ', '? Quick.')]):
        text = f'{before}{variant}{after}'
        found = find_phrase(text, 'en', EN)
        assert found and phrase in find_phrase_text_all(text), (text, found)


def find_phrase_text_all(text):
    """All default phrases contained in ``text`` (helper: the longest wins in find_phrase)."""
    return [p for p in EN if find_phrase(text, 'en', [p])]


@pytest.mark.parametrize('text, phrase', [
    ("I'm stuck!", 'i am stuck'), ('I’m trapped in here', 'trapped in here'),
    ("I can't move", 'i cannot move'), ('I can not breathe', 'i cannot breathe'),
    ("We're stuck down here", 'we are stuck'), ("I've fallen", 'i have fallen'),
    ('Is anybody there?', 'is anybody there'), ('Get me out of here!', 'get me out'),
    ('Over here! Over here!', 'over here'), ("It's me, help!", 'help')])
def test_contractions_and_apostrophes_are_written_out(text, phrase):
    """Contractions (straight or typographic apostrophes) match the phrase written out."""
    assert find_phrase(text, 'en', EN) == phrase


def test_normalisation():
    """Lower case, NFKC, punctuation to single spaces, contractions written out."""
    assert normalize_text("  I'M   STUCK -- can’t MOVE!!") == 'i am stuck cannot move'
    assert normalize_text('Ｈｅｌｐ！') == 'help'
    assert normalize_text("'quoted' words") == 'quoted words'


def test_phrase_score_is_the_geometric_mean_of_its_tokens_and_the_best_occurrence_wins():
    """With token probabilities, a phrase scores the geometric mean of the tokens it covers
    (punctuation outside it does not count); among all occurrences of all phrases the best
    score wins, the longer phrase on a tie."""
    pieces = [(' Help', 0.3), ('!', 0.9), (' Help', 0.95), (' me', 0.8), ('!', 0.1)]
    assert find_phrase_scored(pieces, 'en', EN) == ('help', pytest.approx(0.95))
    pieces = [(' Help', 0.4), (' me', 0.9), ('!', 0.01)]
    assert find_phrase_scored(pieces, 'en', EN) == ('help me', pytest.approx(0.6))
    pieces = [(' Help', 0.9), (' me', 0.9)]
    assert find_phrase_scored(pieces, 'en', EN) == ('help me', pytest.approx(0.9))
    # "I'm" is one token written out as two words: counted once.
    pieces = [(" I'm", 0.5), (' stuck', 0.98), ('.', 0.2)]
    assert find_phrase_scored(pieces, 'en', EN) == ('i am stuck', pytest.approx(0.7))
    assert find_phrase_scored([(' Hello', 0.99)], 'en', EN) == ('', 0.0)


def test_phrase_lists_per_language_and_their_errors():
    """Only configured languages are kept; entries need 'lang:phrase'; each language needs
    a phrase; no-space languages match substrings."""
    phrases = parse_help_phrases(DEFAULT_HELP_PHRASES, ['en', 'de', 'ja'])
    assert set(phrases) == {'en', 'de', 'ja'}
    assert find_phrase('Hilfe! Ich stecke fest.', 'de', phrases['de']) == 'ich stecke fest'
    assert find_phrase('だれか助けてください', 'ja', phrases['ja']) == '助けてください'
    with pytest.raises(ConfigError, match='whisper_help_phrases'):
        parse_help_phrases(['help'], ['en'])
    with pytest.raises(ConfigError, match='no phrase for language'):
        parse_help_phrases(['en:help'], ['en', 'sv'])
    with pytest.raises(ConfigError, match='whisper_languages'):
        parse_help_phrases(['en:help'], [])
