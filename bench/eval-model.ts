// The model's quality measured through the engine as it ships (WorkspaceContext.ask and
// complete, the model's forward, on the CPU), on held-out repositories never trained on:
//   lookup        "Where is `X` defined?" / "Where is `X` used?" at each context size:
//                 right when the answer's first place is a gold path within ±2 lines
//   attribution   the first source returned covers the definition line
//   honesty       names absent from the workspace: the answer says so and names no place
//   cross-file    exact match of the rest of a line cut just before a name defined in
//                 another file: the whole workspace in context vs the file alone
//   fill-in       single-line fill-in-the-middle exact match, the file alone: the model's
//                 FIM (the training format, whole), and the same lines completed inline
//                 as the engine ships it
//   bits/byte     on held-out code, rows of 4,096 tokens
// --quick (development, the smoke test): 8K only, 3 items of each kind, one 1,024-token
// bits-per-byte row.
//
//   npm run eval:model -- [--sizes 8k,32k,128k[,1m]] [--questions 20] [--completions 20]
//     [--model DIR] [--seed 0] [--quick] [--out docs/benchmarks/model-eval.json]
//     [--dump-questions FILE [--dump-only]] [--repos DIR,DIR] [--cache DIR] [--bpb-rows 8]
//     [--question-topk N]   (the sparse layers' block budget for questions; default the engine's)
// --repos evaluates local folders instead (each one repository); --dump-questions writes
// the contexts, questions, sites and bits-per-byte rows so training/evaluate.py can score
// the same items (--dump-only: that alone, in seconds, without running the model):
//   { seed, model, sizes: [{ size, files: [path in context order], lookup: [{ kind, name,
//     question, definition, gold: [{ path, line }], depth }], absent: [{ name, question }],
//     crossFile: [{ path, line, column, name, definedIn, middle }] }],
//     fillIn: [{ path, line, prefix, middle, suffix }], bitsPerByte: [{ start, ids }],
//     texts: { path: text } }   (lines 1-based; a context is `<|file|>path\n` + text, in order)
// 1M takes ~20 minutes of indexing on 2 cores.
import { existsSync, mkdirSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { SalaModel } from '../engine/model/sala-model.js';
import { loadTokenizer } from '../engine/model/tokenizer.js';
import { PromptFormat, SPECIAL } from '../engine/context/prompt-format.js';
import { defaultModelDir } from '../engine/cli/main.js';
import { heldoutRepos, defaultCacheDir } from './eval/heldout.js';
import { localRepo, type Repo } from './eval/sources.js';
import { Random } from './eval/random.js';
import { FileTokens, buildContext, pickWorkspace, type Workspace } from './eval/contexts.js';
import { absentQuestions, crossFileSites, fillInSites, lookupQuestions, type AbsentQuestion, type CompletionSite, type LookupQuestion, type PlacedFile } from './eval/questions.js';
import { LineIndex, rate } from './eval/scoring.js';
import { INLINE_FORMS, askAbsent, askLookup, completeFileAlone, completeInWorkspace, fillIn, type AskOutcome, type CompletionOutcome, type MeasuredForm } from './eval/measure.js';
import { cursorLine, inlineForm } from '../engine/context/completion.js';
import { bitsPerByte, bitsPerByteRows, tokenBytes } from './eval/bits-per-byte.js';
import { sizeLabel, writeReport, type EvalResult, type SizeResult } from './eval/report.js';
import { OptionsError, parseOptions } from './eval/options.js';

const median = (xs: number[]) => (xs.length === 0 ? 0 : [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]);
const log = (message: string) => process.stderr.write(`${message}\n`);
const seconds = (since: number) => (performance.now() - since) / 1000;
/** Cross-file sites sit in files of at most this many tokens: the file-alone context is built for each (~1,000 tokens/s on 2 cores). */
const MAX_SITE_FILE_TOKENS = 8192;
const WORKSPACE_DRAWS = 8;

async function main(): Promise<void> {
  const options = parseOptions(process.argv.slice(2));
  const { quick, seed, dumpOnly, questions: questionCount, completions: completionCount } = options;
  const began = performance.now();
  for (const dir of options.repos ?? [])
    if (!existsSync(dir) || !statSync(dir).isDirectory()) throw new OptionsError(`--repos: ${dir} is not a folder (name local folders, each one repository, separated by commas)`);
  const repos: Repo[] = options.repos ? options.repos.map((d) => localRepo(path.resolve(d))) : heldoutRepos(path.resolve(options.cache ?? defaultCacheDir()), log);
  if (repos.length === 0) throw new Error('no held-out code: npm pack and apt-get download both failed (see above), or --repos named no source files');
  const fetchSeconds = seconds(began);
  log(`eval: ${repos.length} repositories, ${repos.reduce((n, r) => n + r.files.length, 0)} files (${fetchSeconds.toFixed(1)} s)`);

  const loadStarted = performance.now();
  const modelDir = path.resolve(options.model ?? defaultModelDir());
  const model = await SalaModel.load(modelDir);
  const tokenizer = await loadTokenizer(modelDir, model.config.vocabSize);
  const tokens = new FileTokens(new PromptFormat(tokenizer));
  const loadSeconds = seconds(loadStarted);

  const dump: Record<string, unknown> = { seed, model: path.basename(modelDir), sizes: [] as unknown[] };
  const texts = new Map<string, string>();
  const dumpSize = (size: number, placed: readonly PlacedFile[], made: Items) => {
    for (const f of placed) texts.set(f.path, f.text);
    (dump.sizes as unknown[]).push({ size, files: placed.map((f) => f.path), lookup: made.lookups, absent: made.absent, crossFile: made.sites.map(siteRef) });
  };
  /** The questions and sites of one context. */
  const items = (workspace: Workspace, placed: readonly PlacedFile[], rng: Random): Items => {
    const inContext = new Set(placed.map((f) => f.path));
    const outside = repos.filter((r) => !workspace.repos.includes(r.name)).flatMap((r) => r.files);
    const elsewhere = (outside.length > 0 ? outside : repos.flatMap((r) => r.files).filter(([p]) => !inContext.has(p))).slice(0, 200).map(([, t]) => t);
    return {
      lookups: [...lookupQuestions(placed, 'defined', questionCount, rng), ...lookupQuestions(placed, 'used', questionCount, rng)],
      absent: absentQuestions(placed, elsewhere, questionCount, rng),
      sites: crossFileSites(placed, completionCount, rng, MAX_SITE_FILE_TOKENS),
    };
  };
  /**
   * A workspace with cross-file sites: of up to WORKSPACE_DRAWS random draws, the first
   * with --completions of them (else the one with most). A small context of files that
   * do not use each other (common at 8K) would leave cross-file completion unmeasured.
   */
  const pickWithSites = (size: number, rng: Random): Workspace => {
    let best: { workspace: Workspace; sites: number } | undefined;
    for (let draw = 0; draw < WORKSPACE_DRAWS; draw++) {
      const workspace = pickWorkspace(repos, size, tokens, rng);
      const sites = crossFileSites(workspace.files, completionCount, new Random(seed), MAX_SITE_FILE_TOKENS).length;
      if (!best || sites > best.sites) best = { workspace, sites };
      if (sites >= completionCount) break;
    }
    return best!.workspace;
  };
  const results: SizeResult[] = [];
  for (const size of options.sizes) {
    const rng = new Random(seed * 1000 + size);
    const workspace = pickWithSites(size, rng);
    if (dumpOnly) {
      // The files go in one after another from position 0: their places are the layout's.
      dumpSize(size, workspace.files, items(workspace, workspace.files, rng));
      continue;
    }
    const indexStarted = performance.now();
    log(`eval ${sizeLabel(size)}: indexing ${workspace.files.length} files, ${workspace.tokens} tokens`);
    const { context, placed } = await buildContext(model, tokenizer, workspace.files, tokens);
    const indexSeconds = seconds(indexStarted);
    const lines = new LineIndex(placed);
    const { lookups, absent, sites } = items(workspace, placed, rng);
    dumpSize(size, placed, { lookups, absent, sites });

    const lookupStarted = performance.now();
    const asks: AskOutcome[] = [];
    // Each question twice: as the engine ships (grounded) and with the model unaided.
    for (const q of lookups) for (const grounded of [true, false]) asks.push(await askLookup(context, q, lines, { grounded, topk: options.questionTopk }));
    const lookupSeconds = seconds(lookupStarted);
    const absentStarted = performance.now();
    for (const q of absent) for (const grounded of [true, false]) asks.push(await askAbsent(context, q, lines, { grounded, topk: options.questionTopk }));
    const absentSeconds = seconds(absentStarted);

    const crossStarted = performance.now();
    const crossFile: SizeResult['items']['crossFile'] = [];
    const original = new Map(placed.map((f) => [f.path, f.text]));
    for (const site of sites) {
      const workspaceOutcomes = await completeInWorkspace(context, site, original.get(site.path) ?? '');
      const alone = await completeFileAlone(model, tokenizer, site, tokens);
      crossFile.push({ shipped: shippedForm(site), workspace: workspaceOutcomes, alone });
    }
    const crossSeconds = seconds(crossStarted);

    const of = (kind: AskOutcome['kind'], grounded = true) => asks.filter((a) => a.kind === kind && a.grounded === grounded);
    const crossWorkspace = rate(crossFile.map((c) => c.workspace[c.shipped].correct));
    const crossAlone = rate(crossFile.map((c) => c.alone[c.shipped].correct));
    const byForm = (form: MeasuredForm) => ({ workspace: rate(crossFile.map((c) => c.workspace[form].correct)), alone: rate(crossFile.map((c) => c.alone[form].correct)) });
    const result: SizeResult = {
      size,
      tokens: workspace.tokens,
      files: placed.length,
      repos: workspace.repos,
      lookupDefined: rate(of('defined').map((a) => a.correct)),
      lookupUsed: rate(of('used').map((a) => a.correct)),
      attribution: rate(of('defined').map((a) => a.attributed === true)),
      honesty: rate(of('absent').map((a) => a.correct)),
      honestyNoLocation: rate(of('absent').map((a) => a.noLocation === true)),
      askMs: { grounded: median(asks.filter((a) => a.grounded).map((a) => a.ms)), unaided: median(asks.filter((a) => !a.grounded).map((a) => a.ms)) },
      definedWithChoice: rate(
        of('defined')
          .filter((a) => (a.candidates ?? 0) >= 2)
          .map((a) => a.correct),
      ),
      unaided: {
        lookupDefined: rate(of('defined', false).map((a) => a.correct)),
        lookupUsed: rate(of('used', false).map((a) => a.correct)),
        attribution: rate(of('defined', false).map((a) => a.attributed === true)),
        honesty: rate(of('absent', false).map((a) => a.correct)),
      },
      crossFileWorkspace: crossWorkspace,
      crossFileAlone: crossAlone,
      crossFileRatio: crossAlone.rate > 0 ? crossWorkspace.rate / crossAlone.rate : null,
      crossFileByForm: { continued: byForm('continued'), fim: byForm('fim') },
      seconds: { index: indexSeconds, lookup: lookupSeconds, absent: absentSeconds, crossFile: crossSeconds },
      items: { asks, crossFile },
    };
    results.push(result);
    const u = result.unaided;
    log(
      `eval ${sizeLabel(size)}: defined ${result.lookupDefined.correct}/${result.lookupDefined.n} (unaided ${u.lookupDefined.correct}), used ${result.lookupUsed.correct}/${result.lookupUsed.n} (unaided ${u.lookupUsed.correct}), attribution ${result.attribution.correct}/${result.attribution.n} (unaided ${u.attribution.correct}), honesty ${result.honesty.correct}/${result.honesty.n} (unaided ${u.honesty.correct}), cross-file ${crossWorkspace.correct}/${crossWorkspace.n} vs alone ${crossAlone.correct}/${crossAlone.n} (index ${indexSeconds.toFixed(0)} s, questions ${(lookupSeconds + absentSeconds).toFixed(0)} s, completions ${crossSeconds.toFixed(0)} s)`,
    );
  }

  // In-file completion and bits per byte: over all the held-out code, the same for every size.
  const fimSites = fillInSites(
    repos.flatMap((r) => r.files.map(([p, t]) => ({ path: p, text: t }))),
    completionCount,
    new Random(seed * 1000 + 1),
  );
  const endOfText = tokenizer.tokenToId(SPECIAL.endOfText) ?? 0;
  const rows = bitsPerByteRows(repos, tokens, endOfText, options.bpbRows, options.bpbRowTokens);
  const writeDump = () => {
    const file = path.resolve(options.dumpQuestions ?? '');
    mkdirSync(path.dirname(file), { recursive: true });
    writeFileSync(file, `${JSON.stringify({ ...dump, fillIn: fimSites, bitsPerByte: rows, texts: Object.fromEntries(texts) })}\n`);
    log(`eval: wrote the question set to ${file}`);
  };
  if (dumpOnly) return writeDump();
  const fimStarted = performance.now();
  const { context: empty } = await buildContext(model, tokenizer, [], tokens);
  const fimItems = [];
  for (const site of fimSites) fimItems.push(await fillIn(empty, site));
  const fimSeconds = seconds(fimStarted);
  log(`eval: fill-in-the-middle ${fimItems.filter((i) => i.correct).length}/${fimItems.length} (${fimSeconds.toFixed(0)} s)`);
  const inlineStarted = performance.now();
  const inlineOutcomes: ({ shipped: MeasuredForm } & Record<MeasuredForm, CompletionOutcome>)[] = [];
  for (const site of fimSites) inlineOutcomes.push({ shipped: shippedForm(site), ...(await completeFileAlone(model, tokenizer, site, tokens)) });
  const inlineSeconds = seconds(inlineStarted);
  const inlineItems = inlineOutcomes.map((o) => o[o.shipped]);
  const inlineByForm = (form: MeasuredForm) => rate(inlineOutcomes.map((o) => o[form].correct));
  log(
    `eval: the same lines inline ${inlineItems.filter((i) => i.correct).length}/${inlineItems.length} (continued ${inlineByForm('continued').correct}, fim ${inlineByForm('fim').correct}; ${inlineSeconds.toFixed(0)} s)`,
  );

  const bpbStarted = performance.now();
  const bpb = await bitsPerByte(model, rows, tokenBytes(modelDir, model.config.vocabSize));
  const bpbSeconds = seconds(bpbStarted);
  log(`eval: bits per byte ${bpb.bitsPerByte.toFixed(3)} over ${bpb.rows} rows (${bpbSeconds.toFixed(0)} s)`);

  const cpus = os.cpus();
  const result: EvalResult = {
    model: { name: path.basename(modelDir), dir: path.relative(path.join(__dirname, '..'), modelDir) || modelDir },
    date: new Date().toISOString(),
    command: ['npm run eval:model --', ...process.argv.slice(2)].join(' '),
    machine: { cpus: cpus.length, cpuModel: cpus[0]?.model, node: process.version, platform: `${os.platform()}-${os.arch()}`, loadAverage: os.loadavg() },
    seed,
    quick,
    questionTopk: options.questionTopk,
    heldout: repos.map((r) => ({ name: r.name, lang: r.lang, version: r.version, files: r.files.length, chars: r.files.reduce((n, [, t]) => n + t.length, 0) })),
    sizes: results,
    fillIn: { ...rate(fimItems.map((i) => i.correct)), seconds: fimSeconds, items: fimItems },
    fillInInline: {
      ...rate(inlineItems.map((i) => i.correct)),
      byForm: { continued: inlineByForm('continued'), fim: inlineByForm('fim') },
      seconds: inlineSeconds,
      items: inlineOutcomes.flatMap((o) => INLINE_FORMS.map((form) => o[form])),
    },
    bitsPerByte: { ...bpb, seconds: bpbSeconds },
    seconds: { fetch: fetchSeconds, load: loadSeconds, total: seconds(began) },
  };
  const out = path.resolve(options.out ?? path.join(__dirname, '..', 'docs', 'benchmarks', 'model-eval.json'));
  writeReport(out, result);
  log(`eval: wrote ${out} and its .md (${result.seconds.total.toFixed(0)} s in all)`);

  if (options.dumpQuestions) writeDump();
}

interface Items {
  lookups: LookupQuestion[];
  absent: AbsentQuestion[];
  sites: CompletionSite[];
}

/** The form the engine picks at a site: by the cursor's line. */
const shippedForm = (site: CompletionSite) => {
  const { linePrefix, lineSuffix } = cursorLine(site.prefix, site.suffix);
  return inlineForm(linePrefix, lineSuffix);
};

/** A cross-file site by place (the prefix and suffix follow from the file's text in the dump). */
function siteRef(site: CompletionSite) {
  const column = site.prefix.length - (site.prefix.lastIndexOf('\n') + 1);
  return { path: site.path, line: site.line, column, name: site.name, definedIn: site.definedIn, middle: site.middle };
}

main().catch((err: unknown) => {
  // A bad flag is said as it is; anything else with its stack, to find where.
  const text = err instanceof OptionsError ? err.message : err instanceof Error ? (err.stack ?? err.message) : String(err);
  process.stderr.write(`eval:model failed: ${text}\n`);
  process.exitCode = err instanceof OptionsError ? 2 : 1;
});
