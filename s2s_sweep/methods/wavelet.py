"""Wavelet shrinkage: scikit-image's `denoise_wavelet` with BayesShrink (Chang et al., IEEE TIP
2000), soft thresholds, σ rescaled per sub-band."""

from s2s_sweep.methods.base import ClassicBaseline


class Wavelet(ClassicBaseline):
    name = "wavelet"
    label = "wavelet"
    fixed = {"threshold": "BayesShrink", "mode": "soft", "rescale_sigma": True}
    bytes_per_pixel = 100  # ~80 measured

    def denoise_with_sigma(self, noisy, sigma):
        from skimage.restoration import denoise_wavelet

        options = self.fixed
        return denoise_wavelet(
            noisy,
            sigma=sigma,
            method=options["threshold"],
            mode=options["mode"],
            rescale_sigma=options["rescale_sigma"],
            channel_axis=-1,
        )
