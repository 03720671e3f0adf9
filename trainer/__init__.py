"""The learning half of barcast: windows, scalers, models, training, evaluation, artifacts.

Importing `trainer` is cheap: TensorFlow/Keras load only when a network is built, trained or
loaded. TensorFlow's C++ start-up chatter is silenced unless the environment asks for it.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
