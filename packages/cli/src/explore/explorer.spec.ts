/// <reference lib="dom" />
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import { runCli } from '../main';
import type { PageData } from './model';
import { renderExplorer } from './page';

const CHROMIUM = '/usr/bin/chromium';
// Flags for a sandboxed root session with no network (see the machine notes): no background traffic.
const ARGS = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--font-render-hinting=none'];
const EXAMPLES = resolve(__dirname, '../../../../examples');
/** The stored picture of the demo's memory map the layout is compared with (UPDATE_BASELINE=1 rewrites it). */
const BASELINE = join(__dirname, 'baseline', 'demo-map.png');
/** At most this share of the map's pixels may differ from the baseline (fonts and anti-aliasing move a little). */
const TOLERANCE = 0.002;

function cli(...argv: string[]): { code: number; out: string; err: string } {
  let out = '';
  let err = '';
  const code = runCli(argv, { out: (s) => (out += s), err: (s) => (err += s) });
  return { code, out, err };
}

let dir: string;
const pages = { demo: '', chain: '', image: '', big: '' };
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'kho-explore-'));
  pages.demo = join(dir, 'demo.html');
  pages.chain = join(dir, 'chain.html');
  pages.image = join(dir, 'image.html');
  const image = join(dir, 'demo.kho');
  for (const argv of [
    ['demo', '--ram', '512M', '--mem', '24M', '--seed', '5', '--report', pages.demo],
    ['run', join(EXAMPLES, 'hundred-updates.yaml'), '--report', pages.chain],
    ['kexec', '--ram', '512M', '--mem', '8M', '--seed', '6', '--image', image],
    ['explore', image, '--out', pages.image],
  ]) {
    const r = cli(...argv);
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
  }
  // a page above the 2.7 MB: the chain's own data six times over (six hundred kexecs, renumbered)
  const chain = JSON.parse(/<script id="kho-data" type="application\/json">(.*?)<\/script>/s.exec(readFileSync(pages.chain, 'utf8'))![1]) as PageData;
  const n = chain.generations.length;
  const times = <T extends { g?: number; from?: number; to?: number }>(list: readonly T[], shift: (x: T, k: number) => T): T[] =>
    [0, 1, 2, 3, 4, 5].flatMap((k) => list.map((x) => shift(x, k * n)));
  const big: PageData = {
    ...chain,
    generations: times(chain.generations, (g, d) => ({ ...g, g: (g.g ?? 0) + d })),
    kexecs: times(chain.kexecs, (k, d) => ({ ...k, from: (k.from ?? 0) + d, to: (k.to ?? 0) + d, title: `kexec ${(k.from ?? 0) + d}: generation ${(k.from ?? 0) + d} → generation ${(k.to ?? 0) + d}` })),
  };
  pages.big = join(dir, 'big.html');
  writeFileSync(pages.big, renderExplorer(big));
}, 120_000);
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('the explorer page', () => {
  it.each(['demo', 'chain', 'image'] as const)('%s: one self-contained file: no external resource, its data inline', (which) => {
    const html = readFileSync(pages[which], 'utf8');
    expect(html).not.toMatch(/<link|<img|<iframe|src=|href="http|url\(/);
    expect(html.match(/<script/g)).toHaveLength(2); // the data and the code, both inline
    expect(html).toContain('<script id="kho-data" type="application/json">');
  });
});

// CI installs chromium: there a missing browser must fail the tests, not skip them.
const browserDescribe = existsSync(CHROMIUM) || process.env.CI ? describe : describe.skip;
if (!existsSync(CHROMIUM)) console.warn(`${CHROMIUM} is not installed: the headless-browser tests are skipped (.ci/run installs it)`);

browserDescribe('the explorer in headless Chromium', () => {
  let browser: Browser;
  beforeAll(async () => {
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ARGS, headless: true });
  }, 60_000);
  afterAll(async () => browser?.close());

  /** Opens a page, failing on any console error or warning and any uncaught exception. */
  async function open(file: string): Promise<{ page: Page; problems: string[] }> {
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    const problems: string[] = [];
    page.on('console', (m) => {
      if (m.type() === 'error' || m.type() === 'warning') problems.push(`${m.type()}: ${m.text()}`);
    });
    page.on('pageerror', (e) => problems.push(`pageerror: ${e.message}`));
    await page.goto(`file://${file}`);
    await page.waitForSelector('body[data-ready="1"]', { timeout: 10_000 });
    return { page, problems };
  }

  const kinds = (page: Page) => page.$$eval('#map svg [data-kind]', (els) => [...new Set(els.map((e) => e.getAttribute('data-kind')))].sort());

  it(
    'the demo: both maps, every kind of region, owners; fold, zoom, block details and the radix walk respond',
    async () => {
      const { page, problems } = await open(pages.demo);
      expect(await page.locator('#result').textContent()).toBe('every preserved byte verified');
      expect(await kinds(page)).toEqual(['free', 'free-scratch', 'preserved', 'reserved', 'scratch', 'tracker']);
      const owners = await page.$$eval('#map svg rect[data-kind="preserved"]', (els) => [...new Set(els.map((e) => e.getAttribute('data-owner')))].sort());
      expect(owners).toEqual(['kho', 'kho-test', 'kstate', 'memfd', 'reserve_mem']);
      // a fold unfolds on a click
      const folds = await page.locator('#map g.fold').count();
      expect(folds).toBeGreaterThan(0);
      await page.locator('#map g.fold').first().click();
      expect(await page.locator('#map g.fold').count()).toBe(folds - 1);
      // a click on a preserved block gives its block, order, owner and subtree
      await page.locator('#map rect[data-owner="memfd"]').first().click();
      const detail = await page.locator('#detail').textContent();
      expect(detail).toMatch(/blocks?0x[0-9a-f]+, order \d+ \([\d.]+ [KM]iB\)/);
      expect(detail).toContain('owner memfd');
      expect(detail).toMatch(/subtreememfd: (memfd table|folio of (dense\.bin|sparse\.bin|boot\.log))/);
      // the radix walk from the root to the block's bit: five tables, then the leaf
      await page.locator('#walk').click();
      const rows = await page.$$eval('#walk-out table.walk tr', (trs) => trs.slice(1).map((tr) => tr.textContent ?? ''));
      expect(rows).toHaveLength(6);
      expect(rows[0]).toMatch(/^level 5 \(root\)0x[0-9a-f]+entry [0-3]→ 0x[0-9a-f]+$/);
      expect(rows[5]).toMatch(/^leaf \(level 0\)0x[0-9a-f]+bit \d+ of 32768set: the block 0x[0-9a-f]+ order \d+/);
      // zoom in around the selection, and back
      await page.locator('#zoom-in').click();
      expect(await page.locator('#zoom-label').textContent()).toMatch(/^showing 0x[0-9a-f]+–0x[0-9a-f]+ \([\d.]+ MiB\)$/);
      await page.locator('#zoom-all').click();
      expect(await page.locator('#zoom-label').textContent()).toBe('showing all RAM (long free runs folded)');
      // the next kernel's map: what was handed over and is not restored yet
      await page.locator('#map-tabs button[data-tab="after"]').click();
      expect(await kinds(page)).toEqual(['allocated', 'free', 'free-scratch', 'incoming', 'preserved', 'reserved', 'scratch', 'tracker']);
      // the FDT tree, and a subtree decoded by its renderer when opened
      expect(await page.locator('#fdt details').first().getAttribute('open')).toBe('');
      const kstate = page.locator('#fdt details.subtree[data-subtree="kstate"]');
      expect(await kstate.locator('details, .leaf').count()).toBe(0);
      await kstate.locator('summary').first().click();
      // a subtree is decoded on its toggle event, which the browser fires after the click returns
      await kstate.getByText('kho_test #0').first().waitFor({ timeout: 10_000 });
      expect(await kstate.textContent()).toMatch(/kho_test #0 = v1/);
      // the reserve_mem region rides in memblock's own subtree (memblock-v1)
      const memblock = page.locator('#fdt details.subtree[data-subtree="memblock"]');
      await memblock.locator('summary').first().click();
      await memblock.getByText('kho_test_log').first().waitFor({ timeout: 10_000 });
      expect(await page.locator('#checks li').allTextContents()).toContainEqual(expect.stringMatching(/^memfd: 3 files \(16\.19 MiB of file size, 3\.26 MiB written\) compared byte for byte, holes included: verified$/));
      expect(problems).toEqual([]);
      await page.close();
    },
    60_000,
  );

  it(
    'the demo map looks as it did: a screenshot against the stored baseline',
    async () => {
      const { page, problems } = await open(pages.demo);
      // The map is pinned to the page's top left first: the summary above it holds measured times, whose
      // length can move the map by a fraction of a pixel and with it every line's anti-aliasing.
      await page.evaluate(() => {
        const map = document.querySelector<HTMLElement>('#map')!;
        map.style.width = `${Math.round(map.getBoundingClientRect().width)}px`;
        Object.assign(map.style, { position: 'fixed', top: '0', left: '0', zIndex: '1000', background: '#fff' });
      });
      const shot = await page.locator('#map svg').screenshot();
      if (process.env.UPDATE_BASELINE === '1' || (!existsSync(BASELINE) && !process.env.CI)) {
        mkdirSync(join(BASELINE, '..'), { recursive: true });
        writeFileSync(BASELINE, shot);
        console.warn(`wrote the baseline ${BASELINE}`);
      }
      // compared in the page: both pictures drawn on canvases, pixels counted that differ by more than a shade
      const diff = await page.evaluate(
        async ([a, b]) => {
          const load = (src: string) =>
            new Promise<HTMLImageElement>((ok, fail) => {
              const img = new Image();
              img.onload = () => ok(img);
              img.onerror = () => fail(new Error('not a PNG'));
              img.src = `data:image/png;base64,${src}`;
            });
          const [x, y] = await Promise.all([load(a), load(b)]);
          if (x.width !== y.width || x.height !== y.height) return { size: `${x.width}x${x.height} vs ${y.width}x${y.height}`, share: 1 };
          const px = (img: HTMLImageElement) => {
            const c = document.createElement('canvas');
            c.width = img.width;
            c.height = img.height;
            const g = c.getContext('2d')!;
            g.drawImage(img, 0, 0);
            return g.getImageData(0, 0, img.width, img.height).data;
          };
          const [p, q] = [px(x), px(y)];
          let differ = 0;
          for (let i = 0; i < p.length; i += 4) {
            if (Math.abs(p[i] - q[i]) > 24 || Math.abs(p[i + 1] - q[i + 1]) > 24 || Math.abs(p[i + 2] - q[i + 2]) > 24) differ++;
          }
          return { size: `${x.width}x${x.height}`, share: differ / (p.length / 4) };
        },
        [readFileSync(BASELINE).toString('base64'), shot.toString('base64')] as const,
      );
      expect(diff.size).toMatch(/^\d+x\d+$/);
      expect(diff.share).toBeLessThan(TOLERANCE);
      expect(problems).toEqual([]);
      await page.close();
    },
    60_000,
  );

  it(
    'a hundred updates: first paint under a second, one page with a summary, the timeline selects any kexec',
    async () => {
      const { page, problems } = await open(pages.chain);
      const fcp = await page.evaluate(() => performance.getEntriesByName('first-contentful-paint')[0]?.startTime ?? Infinity);
      console.log(`explorer: first contentful paint ${fcp.toFixed(0)} ms for a ${(readFileSync(pages.chain).length / 2 ** 20).toFixed(2)} MiB page of 100 kexecs`);
      expect(fcp).toBeLessThan(1000);
      expect(await page.locator('#summary tr').count()).toBeGreaterThanOrEqual(5);
      expect(await page.locator('#summary').textContent()).toContain('verified by the next kernel100 of 100 kexecs');
      expect(await page.locator('#timeline figure.chart').count()).toBe(4);
      // only the selected kexec is drawn
      expect(await page.locator('#map svg').count()).toBe(1);
      expect(await page.locator('#kexec-title').textContent()).toBe('kexec 1: generation 1 → generation 2');
      await page.locator('#timeline rect.hit[data-gen="60"]').first().click();
      expect(await page.locator('#kexec-title').textContent()).toMatch(/^kexec (59|60): generation \d+ → generation \d+$/);
      await page.locator('#next').click();
      expect(await page.locator('#stepper-label').textContent()).toMatch(/^kexec (60|61): generation \d+ → generation \d+: verified$/);
      await page.locator('#timeline figure.wide rect.hit[data-gen="100"]').click();
      expect(await page.locator('#kexec-title').textContent()).toMatch(/^kexec (99|100): /);
      expect(await kinds(page)).toContain('preserved');
      expect(problems).toEqual([]);
      await page.close();
    },
    60_000,
  );

  it(
    'a page over 2.7 MB (six hundred kexecs): first paint under a second',
    async () => {
      const size = readFileSync(pages.big).length;
      expect(size).toBeGreaterThan(2.7e6);
      const { page, problems } = await open(pages.big);
      const fcp = await page.evaluate(() => performance.getEntriesByName('first-contentful-paint')[0]?.startTime ?? Infinity);
      console.log(`explorer: first contentful paint ${fcp.toFixed(0)} ms for a ${(size / 2 ** 20).toFixed(2)} MiB page of 600 kexecs`);
      expect(fcp).toBeLessThan(1000);
      await page.locator('#timeline figure.wide rect.hit[data-gen="400"]').click();
      expect(await page.locator('#kexec-title').textContent()).toMatch(/^kexec (399|400): /);
      expect(problems).toEqual([]);
      await page.close();
    },
    60_000,
  );

  it(
    'an image: the map from the image alone, blocks named by the subtree that holds them, no problems',
    async () => {
      const { page, problems } = await open(pages.image);
      expect(await page.locator('#result').textContent()).toBe('the next kernel would accept this handover');
      expect(await kinds(page)).toEqual(expect.arrayContaining(['preserved', 'tracker', 'populated', 'empty']));
      const owners = await page.$$eval('#map svg rect[data-kind="preserved"]', (els) => [...new Set(els.map((e) => e.getAttribute('data-owner')))].sort());
      expect(owners).toEqual(expect.arrayContaining(['kho', 'kstate', 'memfd']));
      expect(await page.locator('#problems').textContent()).toBe('');
      expect(problems).toEqual([]);
      await page.close();
    },
    60_000,
  );
});
