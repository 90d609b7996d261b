"""Train the Keras model of the mnist-keras-dpl deployment (CPU, fixed seeds, well under a minute).

    python examples/mnist/train/train_keras.py

Writes examples/mnist/deployment-keras/model/mnist.keras (Keras 3 format) and rewrites the sample
folder via make_data. The scoring script loads it from $AZUREML_MODEL_DIR/model/.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")  # oneDNN may reorder float sums: keep runs repeatable

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from tensorflow import keras  # noqa: E402

HERE = Path(__file__).resolve().parent
DEPLOYMENT_DIR = HERE.parent / "deployment-keras"
sys.path.insert(0, str(HERE))

import make_data  # noqa: E402

SEED = 0
EPOCHS = 20
BATCH_SIZE = 32
LEARNING_RATE = 1e-3


def build_model() -> keras.Model:
    """A small CNN: input (28, 28, 1) floats in 0..1, output softmax over 10 classes."""
    return keras.Sequential(
        [
            keras.Input(shape=(28, 28, 1)),
            keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dropout(0.2),
            keras.layers.Dense(10, activation="softmax"),
        ],
        name="mnist_classifier",
    )


def main() -> None:
    started = time.perf_counter()
    keras.utils.set_random_seed(SEED)
    tf.config.experimental.enable_op_determinism()
    tf.config.threading.set_inter_op_parallelism_threads(1)
    tf.config.threading.set_intra_op_parallelism_threads(1)

    x_train, y_train, x_test, y_test = make_data.main()
    xt = (x_train.astype(np.float32) / 255.0)[..., None]
    xv = (x_test.astype(np.float32) / 255.0)[..., None]

    model = build_model()
    steps = EPOCHS * int(np.ceil(len(xt) / BATCH_SIZE))
    schedule = keras.optimizers.schedules.CosineDecay(LEARNING_RATE, decay_steps=steps)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=schedule),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    model.fit(xt, y_train, batch_size=BATCH_SIZE, epochs=EPOCHS, shuffle=True, verbose=2)

    _, test_accuracy = model.evaluate(xv, y_test, verbose=0)
    out = DEPLOYMENT_DIR / "model" / "mnist.keras"
    out.parent.mkdir(parents=True, exist_ok=True)
    # Save a fresh, uncompiled copy: same weights, no optimizer state (a third of the size).
    inference_model = build_model()
    inference_model.set_weights(model.get_weights())
    inference_model.save(out)
    print(f"test accuracy: {test_accuracy:.4f} on {len(xv)} held-out images")
    print(f"saved {out.relative_to(HERE.parent.parent.parent)} ({out.stat().st_size} bytes)")
    print(f"training took {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
