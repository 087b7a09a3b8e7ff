// Drive the page `edge-ssl web` wrote in headless Chromium: upload images, read the answers, and
// try both model files on WebGPU. Prints one JSON line; tests/test_web.py checks it.
//
//   node check_page.mjs PAGE_URL ANY_SIZE_MODEL_URL FIXED_MODEL_URL IMAGE...
import puppeteer from "puppeteer-core";

const [url, anyModel, fixedModel, ...images] = process.argv.slice(2);
const browser = await puppeteer.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  headless: true,
  // No sandbox in containers; WebGPU on whatever adapter the machine has (SwiftShader's Vulkan
  // where there is no GPU).
  args: ["--no-sandbox", "--enable-unsafe-webgpu", "--enable-features=Vulkan",
         "--use-angle=swiftshader", "--enable-unsafe-swiftshader"],
});
const log = [];
try {
  const page = await browser.newPage();
  page.on("console", (message) => log.push(message.text()));
  page.on("pageerror", (error) => log.push(String(error)));
  await page.goto(url);
  await page.waitForFunction(() => window.edgeSsl && (window.edgeSsl.model || window.edgeSsl.error),
                             { timeout: 60000 });
  const loaded = await page.evaluate(() => ({
    error: window.edgeSsl.error,
    providers: window.edgeSsl.model?.executionProviders ?? null,
    isolated: crossOriginIsolated,
    status: document.getElementById("model").textContent,
  }));
  let results = [];
  if (!loaded.error) {
    await (await page.$("#files")).uploadFile(...images);
    await page.waitForFunction((n) => window.edgeSsl.results.length === n, { timeout: 60000 },
                               images.length);
    results = await page.evaluate(() => window.edgeSsl.results);
  }
  const webgpu = await page.evaluate(async (models) => {
    const adapter = navigator.gpu ? await navigator.gpu.requestAdapter() : null;
    if (!adapter) return { available: false, reason: navigator.gpu ? "no WebGPU adapter" : "no navigator.gpu" };
    const outcome = { available: true };
    const { ort, model } = window.edgeSsl;
    const size = model?.imageSize ?? 32;
    for (const url of models) {
      try {
        const session = await ort.InferenceSession.create(url, { executionProviders: ["webgpu"] });
        const image = new ort.Tensor("uint8", new Uint8Array(size * size * 3), [1, size, size, 3]);
        await session.run({ image });
        await session.release();
        outcome[url] = "ran";
      } catch (error) {
        outcome[url] = String(error.message ?? error);
      }
    }
    return outcome;
  }, [anyModel, fixedModel]);
  console.log(JSON.stringify({ loaded, results, webgpu, log }));
} finally {
  await browser.close();
}
