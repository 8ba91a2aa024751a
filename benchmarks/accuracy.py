"""Accuracy on scikit-learn digits (fixed split and seed): float; 8-bit PTQ; 4-bit/4-bit QAT from float.

Targets: 8-bit PTQ within 0.3 pt of float, 4-bit QAT within 0.5 pt.
"""

import json

import torch

from examples.digits_qat import accuracy, digits_data, float_cnn, quant_cnn, train
from quantframe import config
from quantframe.calibrate import calibration_mode


def quantized_copy(float_model: torch.nn.Module, bits: int) -> torch.nn.Module:
    model = quant_cnn(weight_bit_width=bits, act_bit_width=bits)
    previous, config.IGNORE_MISSING_KEYS = config.IGNORE_MISSING_KEYS, True
    try:
        model.load_state_dict(float_model.state_dict())
    finally:
        config.IGNORE_MISSING_KEYS = previous
    return model


def main() -> None:
    torch.set_num_threads(2)
    torch.manual_seed(0)
    x_train, y_train, x_test, y_test = digits_data()
    float_model = float_cnn()
    train(float_model, x_train, y_train, epochs=30, lr=1e-2)
    results = {"float": accuracy(float_model, x_test, y_test)}

    ptq = quantized_copy(float_model, 8).eval()
    with calibration_mode(ptq):
        for start in range(0, len(y_train), 256):
            ptq(x_train[start : start + 256])
    results["PTQ w8a8"] = accuracy(ptq, x_test, y_test)

    qat = quantized_copy(float_model, 4)
    train(qat, x_train, y_train, epochs=20, lr=1e-3)
    results["QAT w4a4"] = accuracy(qat, x_test, y_test)

    print(f"\n{'model':<12}{'accuracy %':>12}{'vs float':>10}")
    for name, acc in results.items():
        print(f"{name:<12}{acc:>12.2f}{acc - results['float']:>10.2f}")
    print(json.dumps({"benchmark": "accuracy (digits)", "results": results}))


if __name__ == "__main__":
    main()
