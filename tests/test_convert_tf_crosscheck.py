"""Cross-checks against TensorFlow itself; skipped unless `tensorflow` is importable (hierloc never needs it).

The second test is the acceptance check: the real released graph (../shared/seed) is run by TF with
random values for its exact variables, saved by TF's own saver, converted by hierloc, and the
descriptors of the sample images are compared.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import shared_path

from hierloc.models import load_model
from hierloc.models.convert import TensorBundleReader, convert_tf_mobilenetvlad, write_tensor_bundle
from hierloc.utils.images import read_image

tf = pytest.importorskip("tensorflow")


def test_tensorflow_reads_our_bundles_and_we_read_its(tmp_path):
    rng = np.random.default_rng(0)
    tensors = {f"layer_{i:03d}/w": rng.normal(size=(i % 5 + 1, 3)).astype(np.float32) for i in range(300)}
    tensors.update(i64=np.arange(5, dtype=np.int64), f64=rng.normal(size=(2, 2)), flags=np.array([True, False]),
                   half=np.ones(3, np.float16), scalar=np.float32(3.5))
    write_tensor_bundle(tmp_path / "ours", tensors, index_block_size=512)
    reader = tf.train.load_checkpoint(str(tmp_path / "ours"))
    for name, value in tensors.items():
        np.testing.assert_array_equal(reader.get_tensor(name), value)
    names = [f"scope_{i:05d}/a/long/variable/name" for i in range(3000)]
    values = [rng.normal(size=(i % 3 + 1,)).astype(np.float32) for i in range(3000)]
    tf.raw_ops.SaveV2(prefix=str(tmp_path / "theirs"), tensor_names=names, shape_and_slices=[""] * len(names),
                      tensors=values)
    ours = TensorBundleReader(tmp_path / "theirs")
    for name, value in zip(names, values):
        np.testing.assert_array_equal(ours.read(name), value)


def test_converted_release_matches_the_original_graph(tmp_path):
    from tensorflow.core.protobuf import saved_model_pb2

    seed = shared_path("seed", "mobilenetvlad_depth-0.35")
    images = sorted(shared_path("seed", "images").iterdir())
    saved_model = saved_model_pb2.SavedModel.FromString((seed / "saved_model.pb").read_bytes())
    folder = tmp_path / "mobilenetvlad_depth-0.35"
    (folder / "variables").mkdir(parents=True)
    (folder / "saved_model.pb").write_bytes((seed / "saved_model.pb").read_bytes())
    rng = np.random.default_rng(0)
    expected = {}
    graph = tf.Graph()
    with graph.as_default(), tf.compat.v1.Session(graph=graph) as session:
        saver = tf.compat.v1.train.import_meta_graph(saved_model.meta_graphs[0], clear_devices=True)
        for variable in tf.compat.v1.global_variables():
            shape, name = variable.shape.as_list(), variable.op.name
            if name.endswith("moving_variance"):
                value = rng.uniform(0.5, 2.0, shape)
            elif name.endswith("gamma"):
                value = rng.uniform(0.5, 1.5, shape)
            else:
                value = rng.normal(0, 1 / np.sqrt(max(np.prod(shape[:-1]), 1)) if len(shape) > 1 else 0.1, shape)
            variable.load(value.astype(np.float32), session)
        saver.save(session, str(folder / "variables" / "variables"), write_meta_graph=False, write_state=False)
        for path in images:
            gray = read_image(path, grayscale=True).astype(np.float32)
            expected[path.name] = session.run("descriptor:0", {"image:0": gray[None, :, :, None]})[0]
    convert_tf_mobilenetvlad(folder, tmp_path / "converted.pth")
    model = load_model("mobilenetvlad", weights=tmp_path / "converted.pth")
    for path in images:
        gray = read_image(path, grayscale=True).astype(np.float32)
        with torch.no_grad():
            ours = model(torch.from_numpy(gray)[None, None])[0].numpy()
        np.testing.assert_allclose(ours, expected[path.name], atol=1e-5, err_msg=path.name)
