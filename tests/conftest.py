from tests.fixtures_models import smollm2, tiny_model_dir  # noqa: F401  (shared fixtures)
