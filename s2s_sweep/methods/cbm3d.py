"""CBM3D: BM3D in an opponent colour space (Dabov et al., ICIP 2007), the classic the Self2Self+
paper compares with in its Tables 2 and 3; `bm3d.bm3d_rgb` of the `bm3d` package (the optional
extra `pip install "s2s-sweep[baselines]"`), profile "np", the package's default."""

import importlib.util

from s2s_sweep.configs import ConfigError
from s2s_sweep.methods.base import ClassicBaseline


class CBM3D(ClassicBaseline):
    name = "cbm3d"
    label = "CBM3D"
    fixed = {"profile": "np"}
    bytes_per_pixel = 1200  # ~1000 measured
    published = {  # the Self2Self+ paper's Table 2 (CBSD68, 68 images) and Table 3
        "cbsd68-15": (33.20, 0.9592),
        "cbsd68-25": (30.16, 0.9251),
        "cbsd68-50": (25.86, 0.8399),
        "sidd": (31.71, 0.7825),
        "polyu": (36.74, 0.9755),
    }
    protocol = "CBM3D of the bm3d package (profile np); the paper does not say which"

    def check_installed(self) -> None:
        if importlib.util.find_spec("bm3d") is None:
            raise ConfigError(
                '--method cbm3d: the bm3d package is not installed; pip install "s2s-sweep[baselines]" (or pip install '
                "bm3d) on every node"
            )

    def denoise_with_sigma(self, noisy, sigma):
        import bm3d

        if noisy.shape[2] == 3:
            return bm3d.bm3d_rgb(noisy, sigma, profile=self.fixed["profile"])
        return bm3d.bm3d(noisy[..., 0], sigma, profile=self.fixed["profile"])[..., None]
