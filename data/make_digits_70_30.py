"""Usage (in a throwaway venv with scikit-learn and pillow): python data/make_digits_70_30.py OUT

scikit-learn's digits, 70/30 split with train_test_split(random_state=0, stratify=None),
written as 8x8 greyscale PNGs scaled 0..16 -> 0..255: OUT/{train,test}/<digit>/<index>.png.
Also prints the raw-pixel logistic regression's test accuracy (the issue's 0.974)."""
import sys
from pathlib import Path
import numpy as np
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

out = Path(sys.argv[1])
digits = load_digits()
index = np.arange(len(digits.target))
train, test = train_test_split(index, test_size=0.3, random_state=0)
for name, rows in (("train", train), ("test", test)):
    for i in rows:
        folder = out / name / str(digits.target[i])
        folder.mkdir(parents=True, exist_ok=True)
        pixels = np.round(digits.images[i] * 255 / 16).astype(np.uint8)
        Image.fromarray(pixels, "L").save(folder / f"{i:04d}.png")
model = LogisticRegression(max_iter=5000).fit(digits.data[train], digits.target[train])
print(f"train {len(train)} test {len(test)}; raw-pixel logistic regression test accuracy "
      f"{model.score(digits.data[test], digits.target[test]):.4f}")
