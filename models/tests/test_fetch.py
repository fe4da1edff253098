"""Tests of models/fetch: idempotence on the real models directory, and clear errors.

The error cases use throw-away manifests and a temporary models directory; they ask the
real registries (PyPI) for a package that does not exist and for a real one whose pinned
hash is wrong.
"""

import os
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
FETCH = os.path.join(HERE, "..", "fetch")


def fetch(*args, manifest=None, models_dir=None):
    cmd = [sys.executable, FETCH, "--no-apt", *args]
    if manifest:
        cmd += ["--manifest", manifest]
    if models_dir:
        cmd += ["--models-dir", models_dir]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


class FetchTest(unittest.TestCase):
    def test_second_run_verifies_and_downloads_nothing(self):
        r = fetch()
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertNotIn("fetching", r.stdout)
        self.assertNotIn("convert whisper", r.stdout.replace("convert ok", ""))
        self.assertTrue(r.stdout.rstrip().endswith("models/fetch: done"), r.stdout)
        # One progress line per package.
        self.assertEqual(sum(1 for line in r.stdout.splitlines() if line.startswith("[")), 9, r.stdout)

    def run_manifest(self, text):
        with tempfile.TemporaryDirectory() as tmp:
            manifest = os.path.join(tmp, "manifest.toml")
            with open(manifest, "w") as f:
                f.write(text)
            r = fetch(manifest=manifest, models_dir=os.path.join(tmp, "models"))
            root = os.path.join(tmp, "models")
            installed = [
                os.path.relpath(os.path.join(d, f), root)
                for d, _, files in os.walk(root)
                for f in files
                if not d.startswith(os.path.join(root, ".downloads")) and f != ".fetch-state.json"
            ]
        return r, installed

    def test_unfetchable_package_is_named(self):
        r, _ = self.run_manifest(
            '[[package]]\nname = "a model that does not exist"\nregistry = "pypi"\n'
            'spec = "tolk-no-such-package-7f3a==1.0.0"\n'
            'files = [{ member = "x/model.bin", dest = "x/model.bin", sha256 = "00" }]\n'
        )
        self.assertEqual(r.returncode, 1)
        self.assertIn("cannot fetch pypi package 'tolk-no-such-package-7f3a==1.0.0'", r.stderr)
        self.assertIn("a model that does not exist", r.stderr)

    def test_hash_mismatch_is_refused_and_nothing_is_installed(self):
        r, installed = self.run_manifest(
            '[[package]]\nname = "six, pinned to a wrong hash"\nregistry = "pypi"\nspec = "six==1.16.0"\n'
            'files = [{ member = "six.py", dest = "lib/six.py", sha256 = "' + "0" * 64 + '" }]\n'
        )
        self.assertEqual(r.returncode, 1, r.stdout)
        self.assertIn("package 'six==1.16.0': six.py has sha256", r.stderr)
        self.assertEqual(installed, [])  # neither the file nor a partial one

    def test_missing_member_is_named(self):
        r, _ = self.run_manifest(
            '[[package]]\nname = "six"\nregistry = "pypi"\nspec = "six==1.16.0"\n'
            'files = [{ member = "weights/model.onnx", dest = "m.onnx", sha256 = "00" }]\n'
        )
        self.assertEqual(r.returncode, 1)
        self.assertIn("package 'six==1.16.0' has no file weights/model.onnx", r.stderr)


if __name__ == "__main__":
    unittest.main()
