import hashlib

import numpy as np
import pytest
import sqlalchemy as sa

from models.registry import ModelNotFound, ModelRegistry, RegistryError, parse_model_spec
from models.store import CHUNK_SIZE, ModelStore, StoreError
from core import migrate
from core.db import make_engine, make_session_factory
from core.errors import InvalidInput


@pytest.fixture
def registry(database_url, tmp_path):
    engine = make_engine(database_url)
    store = ModelStore(make_session_factory(engine), tmp_path / "cache")
    yield ModelRegistry(make_session_factory(engine), store)
    engine.dispose()


def model_file(tmp_path, content: bytes, name="m.keras"):
    path = tmp_path / name
    path.write_bytes(content)
    return path


def test_versions_number_up_per_name(registry, tmp_path):
    a1 = registry.register("mlp", "mlp", model_file(tmp_path, b"one"))
    a2 = registry.register("mlp", "mlp", model_file(tmp_path, b"two"))
    c1 = registry.register("cnn", "cnn", model_file(tmp_path, b"three"))
    assert (a1.version, a2.version, c1.version) == (1, 2, 1)
    assert [(v.name, v.version) for v in registry.list()] == [("cnn", 1), ("mlp", 1), ("mlp", 2)]


def test_exactly_one_active_version_and_rollback(registry, tmp_path):
    registry.register("mlp", "mlp", model_file(tmp_path, b"one"), activate=True)
    registry.register("mlp", "mlp", model_file(tmp_path, b"two"), activate=True)
    assert registry.get("mlp").version == 2
    assert [v.active for v in registry.list("mlp")] == [False, True]
    registry.activate("mlp", 1)  # roll back
    assert registry.get("mlp").version == 1
    assert [v.active for v in registry.list("mlp")] == [True, False]
    assert list(registry.active_versions()) == ["mlp"]


def test_unknown_names_and_versions(registry, tmp_path):
    with pytest.raises(ModelNotFound, match="no model named"):
        registry.get("nope")
    registry.register("mlp", "mlp", model_file(tmp_path, b"one"))
    with pytest.raises(ModelNotFound, match="no active version"):
        registry.get("mlp")
    with pytest.raises(ModelNotFound, match="no version 7"):
        registry.get("mlp", 7)
    with pytest.raises(ModelNotFound):
        registry.activate("mlp", 7)


def test_deleting_the_active_version_is_refused(registry, tmp_path):
    registry.register("mlp", "mlp", model_file(tmp_path, b"one"), activate=True)
    registry.register("mlp", "mlp", model_file(tmp_path, b"two"))
    with pytest.raises(RegistryError, match="active version"):
        registry.delete("mlp", 1)
    registry.delete("mlp", 2)
    assert [v.version for v in registry.list("mlp")] == [1]
    with pytest.raises(ModelNotFound):
        registry.get("mlp", 2)
    # numbers are never reused
    assert registry.register("mlp", "mlp", model_file(tmp_path, b"three")).version == 3


def test_same_bytes_are_stored_once_and_survive_deleting_one_user(registry, tmp_path):
    path = model_file(tmp_path, b"shared bytes")
    registry.register("a", "mlp", path, activate=True)
    second = registry.register("b", "mlp", path)
    registry.delete("b", 1)
    fetched = registry.fetch_file(registry.get("a"))
    assert fetched.read_bytes() == b"shared bytes"
    assert second.blob_sha256 == hashlib.sha256(b"shared bytes").hexdigest()


def test_large_file_in_chunks_round_trips_on_an_empty_cache(registry, tmp_path):
    content = np.random.default_rng(0).bytes(CHUNK_SIZE * 2 + 123)
    info = registry.register("big", "cnn", model_file(tmp_path, content))
    fetched = registry.fetch_file(info)
    assert fetched.read_bytes() == content
    assert fetched.parent.parent == tmp_path / "cache"


def test_corrupted_cache_file_is_detected_and_fetched_again(registry, tmp_path):
    info = registry.register("mlp", "mlp", model_file(tmp_path, b"good bytes"))
    path = registry.fetch_file(info)
    path.write_bytes(b"evil bytes")
    assert registry.fetch_file(info).read_bytes() == b"good bytes"


def test_corruption_in_the_database_is_an_error_not_a_wrong_file(database_url, registry, tmp_path):
    info = registry.register("mlp", "mlp", model_file(tmp_path, b"good bytes"))
    engine = make_engine(database_url)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE model_blob_chunks SET data = :d"), {"d": b"bad bytes!"})
    engine.dispose()
    with pytest.raises(StoreError, match="corrupted"):
        registry.fetch_file(info)


def test_metadata_is_kept(registry, tmp_path):
    info = registry.register(
        "cnn", "cnn", model_file(tmp_path, b"x"),
        hyperparameters={"epochs": 3}, dataset_sha256="ab" * 32, test_accuracy=0.99,
        metrics={"per_class": [{"digit": 0, "precision": 1.0}]}, confusion_matrix=[[1, 0], [0, 1]],
        curves={"loss": [0.5, 0.2]}, train_seconds=12.5, activate=True,
    )
    got = registry.get("cnn", 1)
    assert got.detail() == info.detail()
    assert got.hyperparameters == {"epochs": 3} and got.curves == {"loss": [0.5, 0.2]}


@pytest.mark.parametrize("spec, expected", [("cnn", ("cnn", None)), ("cnn:3", ("cnn", 3))])
def test_parse_model_spec(spec, expected):
    assert parse_model_spec(spec) == expected


@pytest.mark.parametrize("spec", ["", ":3", "cnn:x", "cnn:-1"])
def test_parse_model_spec_rejects(spec):
    with pytest.raises(InvalidInput):
        parse_model_spec(spec)


def test_real_model_fetched_on_an_empty_cache_predicts_identically(services, tiny_mlp_file, mnist, tmp_path):
    import keras

    from models.serving import LoadedModel
    from core.preprocess import scale

    info = services.registry.register("mlp", "mlp", tiny_mlp_file, activate=True)
    images = scale(mnist.x_test[:64])
    expected = keras.models.load_model(tiny_mlp_file, compile=False)(images, training=False).numpy()
    assert not services.store.cache_path(info.blob_sha256).exists()
    loaded = LoadedModel(info, services.registry.fetch_file(services.registry.get("mlp")))
    np.testing.assert_array_equal(loaded.probabilities(images), expected)
    assert (loaded.probabilities(images).argmax(1) == mnist.y_test[:64]).mean() > 0.8


def test_migrations_downgrade_and_upgrade_cleanly_on_mariadb(mysql_url):
    engine = make_engine(mysql_url)
    try:
        migrate.downgrade(mysql_url, "base")
        assert set(sa.inspect(engine).get_table_names()) == {"alembic_version"}
        migrate.upgrade(mysql_url, "0001")
        assert "model_versions" in sa.inspect(engine).get_table_names()
        assert "predictions" not in sa.inspect(engine).get_table_names()
        migrate.upgrade(mysql_url)
        assert {"users", "api_keys", "predictions", "prediction_images"} <= set(sa.inspect(engine).get_table_names())
    finally:
        migrate.upgrade(mysql_url)
        engine.dispose()


def test_migrations_match_the_models(database_url):
    """Alembic's autogenerate finds nothing to add: the migrations build exactly the tables in server/db.py."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from core.db import Base

    engine = make_engine(database_url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    engine.dispose()
    meaningful = [d for d in diff if not (isinstance(d, tuple) and d[0] in ("modify_nullable", "modify_default"))]
    assert meaningful == []
