"""Ray beside an amdsmi that cannot load: `covspec serve --ray` refuses to start, naming it, instead of every Ray
worker dying at start. The broken amdsmi is a package on sys.path that fails as amdsmi 7 does without ROCm's
libamd_smi.so (a KeyError while its wrapper binds the library): the system edge, in its real failure."""

from __future__ import annotations

import sys

import pytest

from covspec.errors import ConfigError
from covspec.runtime_edge.ray_serve import check_amdsmi_loads


def test_no_amdsmi_is_fine() -> None:
    check_amdsmi_loads()  # `make install` removes it; nothing to refuse


def test_an_amdsmi_that_cannot_load_is_refused_with_the_way_out(tmp_path, monkeypatch) -> None:
    package = tmp_path / "amdsmi"
    package.mkdir()
    (package / "__init__.py").write_text(
        "_libraries = {}\n"
        "print('Unable to find libamd_smi.so library try installing amd-smi-lib from your package manager')\n"
        "free_name_value_pairs = _libraries['libamd_smi.so'].amdsmi_free_name_value_pairs\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "amdsmi", raising=False)
    with pytest.raises(ConfigError, match=r"amdsmi is installed but cannot load \(KeyError: 'libamd_smi.so'\)") as info:
        check_amdsmi_loads()
    assert "pip uninstall amdsmi" in str(info.value) and "Ray imports it in every worker" in str(info.value)
