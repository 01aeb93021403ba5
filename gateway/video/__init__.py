"""The video pipeline shared by every video job: probe -> decode -> infer -> compose -> encode."""
