"""Non-local means (Buades et al., CVPR 2005): scikit-image's `denoise_nl_means`, h = 0.8 σ,
5 x 5 patches, a 13 x 13 search window, fast mode."""

from s2s_sweep.methods.base import ClassicBaseline


class NLMeans(ClassicBaseline):
    name = "nlm"
    label = "NL-means"
    fixed = {"h_over_sigma": 0.8, "patch_size": 5, "patch_distance": 6, "fast_mode": True}
    bytes_per_pixel = 160  # ~120 measured

    def denoise_with_sigma(self, noisy, sigma):
        from skimage.restoration import denoise_nl_means

        options = {key: value for key, value in self.fixed.items() if key != "h_over_sigma"}
        return denoise_nl_means(noisy, h=self.fixed["h_over_sigma"] * sigma, sigma=sigma, channel_axis=-1, **options)
