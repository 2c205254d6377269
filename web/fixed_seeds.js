// Text2LIVE's training and fitting nodes run for minutes to hours. ComfyUI's frontend gives every new
// seed widget the control "randomize", which would retrain on every queue; a freshly added Text2LIVE node
// starts with "fixed" instead, so queuing again reuses the result until an input changes. Workflows that
// are loaded keep the control they were saved with (the frontend applies saved values after this hook).
import { app } from "../../scripts/app.js";

export const CONTROL_WIDGET = "control_after_generate";

export function fixSeedControls(node) {
  if (!String(node?.comfyClass ?? "").startsWith("T2L_")) return 0;
  let changed = 0;
  for (const widget of node.widgets ?? []) {
    if (widget.name === CONTROL_WIDGET && widget.value !== "fixed") {
      widget.value = "fixed";
      changed += 1;
    }
  }
  return changed;
}

app.registerExtension({
  name: "text2live.fixedSeeds",
  nodeCreated(node) {
    fixSeedControls(node);
  },
});
