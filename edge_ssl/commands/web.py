"""`edge-ssl web`: a browser page that classifies images with an exported model."""

from __future__ import annotations

from typing import Any

from rich.markup import escape

from edge_ssl.commands.config_options import config_options
from edge_ssl.console import console, user_errors
from edge_ssl.runtime.web import WebConfig


@user_errors
@config_options(WebConfig)
def web(options: dict[str, Any]) -> None:
    """Write a page that classifies dropped images in the browser with onnxruntime-web: DIR
    holds index.html, the edge-ssl.js module and the model.

    Any-size files run on WASM; fixed-size files (*.fixed.onnx) also on WebGPU where the
    browser has it. Serve DIR over HTTP (a page opened from file:// cannot load the model);
    --serve does so with the COOP/COEP headers that multi-threaded WASM needs.
    """
    from edge_ssl.runtime.web import serve_site, write_site

    config = WebConfig(**options)
    out = write_site(config)
    console.print(f"wrote {escape(str(out))}: index.html, edge-ssl.js, "
                  f"{escape(config.model.name)}"
                  + (", ort/ (onnxruntime-web)" if config.onnxruntime_web else
                     " (onnxruntime-web from the jsDelivr CDN)"), soft_wrap=True)
    if not config.serve:
        console.print(f"serve it with: edge-ssl web {escape(str(config.model))} --out "
                      f"{escape(str(out))} --overwrite --serve", soft_wrap=True)
        return
    server = serve_site(out, config.host, config.port)
    console.print(f"serving http://{config.host}:{config.port}/ (cross-origin isolated); "
                  "Ctrl-C stops it", soft_wrap=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
