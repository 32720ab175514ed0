// AudioWorklet module of the /try page: collects the microphone's mono input (128-frame render
// quanta at the AudioContext's rate, Float32 in [-1, 1]) into blocks of about 50 ms and posts each
// block (a transferred Float32Array) to the page, which sends it to WS /ingest as f32le.
class EmostreamCapture extends AudioWorkletProcessor {
  constructor() {
    super();
    this.size = Math.max(128, Math.round(sampleRate / 20));
    this.block = new Float32Array(this.size);
    this.filled = 0;
    this.port.onmessage = (ev) => { if (ev.data === "stop") this.stopped = true; };
  }

  process(inputs) {
    if (this.stopped) return false;
    const channels = inputs[0];
    if (!channels || channels.length === 0) return true; // no input connected yet
    const n = channels[0].length;
    for (let i = 0; i < n; i++) {
      let sum = 0;
      for (let c = 0; c < channels.length; c++) sum += channels[c][i];
      this.block[this.filled++] = sum / channels.length;
      if (this.filled === this.size) {
        this.port.postMessage(this.block, [this.block.buffer]);
        this.block = new Float32Array(this.size);
        this.filled = 0;
      }
    }
    return true;
  }
}

registerProcessor("emostream-capture", EmostreamCapture);
