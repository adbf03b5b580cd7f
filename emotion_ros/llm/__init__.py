"""The one model contract of every LLM backend (llava, audio_visual) and of training.

* :mod:`~emotion_ros.llm.contract`: the 26 categories, VAD scale and words,
  prompts, the score primer, answer format and parser;
* :mod:`~emotion_ros.llm.templates`: chat templates and prompt rendering;
* :mod:`~emotion_ros.llm.encoding`: pixels, image tokens, prompt ids, padding, the
  decoder-cache keyword of the installed transformers;
* :mod:`~emotion_ros.llm.head`: score head layout, VAD mapping, discrete head;
* :mod:`~emotion_ros.llm.labels`: discrete label sets and their mapping onto the 26;
* :mod:`~emotion_ros.llm.person_view`: how a person is shown to the model;
* :mod:`~emotion_ros.llm.multimodal`: the audio-visual model's inputs (one
  placeholder convention, one ``inputs_embeds`` builder for training and serving);
* :mod:`~emotion_ros.llm.spec`: the contract hash recorded in bundles and checked on load;
* :mod:`~emotion_ros.llm.bundle`: the weights bundle format.

Importing this package imports no torch; the modules that need it import it
inside their functions, except :mod:`~emotion_ros.llm.multimodal`.
"""
