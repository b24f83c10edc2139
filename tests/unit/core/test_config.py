from __future__ import annotations

from pathlib import Path

import pytest

from backend.config import Settings
from backend.errors import ConfigError


def test_defaults_follow_the_official_backends(tmp_path: Path) -> None:
    settings = Settings.from_env({"MODEL_DIR": str(tmp_path)})
    assert settings.port == 9090
    assert settings.model_dir == tmp_path.resolve()
    assert settings.basic_auth_user is None
    assert settings.score_threshold == 0.25


def test_values_are_parsed(tmp_path: Path) -> None:
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"x")
    settings = Settings.from_env(
        {
            "MODEL_PATH": str(weights),
            "LABEL_STUDIO_URL": "http://ls:8080/",
            "LABEL_STUDIO_API_KEY": "secret-key",
            "WORKERS": "3",
            "ALLOWED_IMAGE_HOSTS": "Images.Example.com, cdn.example.com",
            "MODEL_SCORE_THRESHOLD": "0.6",
        }
    )
    assert settings.model_path == weights.resolve()
    assert settings.label_studio_url == "http://ls:8080"
    assert settings.workers == 3
    assert settings.allowed_image_hosts == ("images.example.com", "cdn.example.com")
    assert "secret-key" not in repr(settings)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PORT": "http"}, "PORT must be an integer"),
        ({"WORKERS": "0"}, "WORKERS must be >= 1"),
        ({"IMAGE_SIZE": "16"}, r"0 \(automatic\) or >= 32"),
        ({"MODEL_SCORE_THRESHOLD": "2"}, "between 0.0 and 1.0"),
        ({"BASIC_AUTH_USER": "only-user"}, "set together"),
        ({"LABEL_STUDIO_URL": "ls:8080"}, "http"),
        ({"MODEL_PATH": "/nonexistent/w.pt"}, "does not exist"),
        ({"MODEL_SCORE_THRESHOLD": "0.1", "DETECT_CONF_FLOOR": "0.2"}, "must not exceed"),
    ],
)
def test_invalid_values_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(env)


def test_env_names_lists_exactly_what_from_env_reads() -> None:
    from backend.config import ENV_NAMES

    class Recording(dict):
        def __init__(self) -> None:
            super().__init__()
            self.read: set[str] = set()

        def get(self, key: str, default: object = None) -> object:
            self.read.add(key)
            return super().get(key, default)

    env = Recording()
    Settings.from_env(env)
    assert env.read == ENV_NAMES
