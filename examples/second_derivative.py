"""The course notes' nested tapes: the acceleration of a falling body is the second
derivative of its position, position = 4.9 * time ** 2, so 9.8 (m/s^2) at any time.

The inner tape's gradient is computed while the outer tape records, so the outer tape can
differentiate it again.

    .venv/bin/python examples/second_derivative.py
"""
import retrain

time = retrain.Variable(0.0)
with retrain.GradientTape() as outer_tape:
    with retrain.GradientTape() as inner_tape:
        position = 4.9 * time ** 2
    speed = inner_tape.gradient(position, time)
acceleration = outer_tape.gradient(speed, time)

print(f"speed {speed:.4f}")
print(f"acceleration {acceleration:.4f}")
