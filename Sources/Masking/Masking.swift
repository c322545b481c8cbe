// Masking: detectors and strategies that turn sensitive values into masked ones. Pure: no I/O, no
// global state; every entry point is safe to call from any thread.
//
// - `Detector` names a kind of sensitive value; `DetectionEngine` finds them in UTF-8 bytes with
//   small hand-written scanners (no regular expressions: values are hostile and can be megabytes,
//   so every scanner does bounded work per candidate and the whole scan is linear in the input).
// - `MaskStrategy` says what a value becomes; `ValueMasker` applies it to whole values or to the
//   spans the detectors found.
//
// There is deliberately no `public enum Masking`: a type named like its module makes
// `Masking.ValueMasker` resolve to a member lookup on that type and breaks qualified names in
// client modules.
