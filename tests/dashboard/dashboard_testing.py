"""Helpers the dashboard's tests share (a module of its own: ``conftest`` is a name every test
folder has, so importing helpers from it depends on which folder pytest collected last)."""

import base64

import numpy as np
import plotly.io as pio


def figure_of(chart) -> dict:
    """The traces of an AppTest plotly chart element, with plotly's base64 typed arrays decoded."""
    figure = pio.from_json(chart.proto.spec)
    return [{key: decode(value) for key, value in trace.to_plotly_json().items()} for trace in figure.data], figure.layout


def decode(value):
    if isinstance(value, dict) and "bdata" in value:
        return np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"]).tolist()
    if isinstance(value, dict):
        return {k: decode(v) for k, v in value.items()}
    return value.tolist() if isinstance(value, np.ndarray) else value
