"""A small Keras classifier: model(idim) returns an (uncompiled) Keras model."""

import keras


def model(idim):
    return keras.Sequential(
        [
            keras.Input((idim,)),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    )
