/// <reference lib="dom" />
/// <reference lib="dom.iterable" />
// The chat view's script (bundled by esbuild into dist/webview.js). It renders
// the conversation, streams answers, and talks to the host only through the
// typed messages of ./protocol. State survives a reload via setState; the host
// also keeps the history, so a fresh webview is rehydrated on 'ready'.

import '@vscode-elements/elements/dist/vscode-button/index.js';
import '@vscode-elements/elements/dist/vscode-textarea/index.js';
import { renderMarkdown } from './markdown.js';
import type { AnswerLocation, ChatTurn, ContextChip, HostMessage, Source, WebviewMessage } from './protocol.js';

interface VsCodeApi {
  postMessage(message: WebviewMessage): void;
  getState(): unknown;
  setState(state: SavedState): void;
}
declare function acquireVsCodeApi(): VsCodeApi;

interface SavedState {
  turns: ChatTurn[];
  draft: string;
}

const vscode = acquireVsCodeApi();
const log = element('log');
const chipsBar = element('chips');
const question = element('question');
const sendButton = element('send');
const stopButton = element('stop');
const clearButton = element('clear');
const engineState = element('engine-state');

let turns: ChatTurn[] = [];
let chips: ContextChip[] = [];
const rendered = new Map<string, HTMLElement>();
/** Deltas received per answer: shown as data-deltas, so a test can tell streaming from one late block. */
const deltaCounts = new Map<string, number>();
let renderQueued = new Set<string>();

function element(id: string): HTMLElement {
  const found = document.getElementById(id);
  if (found === null) throw new Error(`chat view: #${id} is missing`);
  return found;
}

/** The vscode-textarea's value (a property on the custom element). */
function draft(): string {
  return 'value' in question && typeof question.value === 'string' ? question.value : '';
}

function setDraft(value: string): void {
  if ('value' in question) question.value = value;
}

function save(): void {
  vscode.setState({ turns, draft: draft() });
}

function streaming(): ChatTurn | undefined {
  return turns.find((turn) => turn.finishReason === undefined);
}

function updateControls(): void {
  const active = streaming();
  // Stop takes Ask's place while an answer streams, so nothing else moves under the pointer
  stopButton.hidden = active === undefined;
  sendButton.hidden = active !== undefined;
}

function renderChips(): void {
  chipsBar.replaceChildren(
    ...chips.map((chip) => {
      const item = document.createElement('span');
      item.className = 'chip';
      item.setAttribute('role', 'listitem');
      item.title = chip.kind === 'selection' ? `Selection in ${chip.path}` : chip.path;
      item.textContent = `${chip.kind === 'selection' ? 'Selection' : 'File'}: ${chip.label}${chip.truncated ? ' (truncated)' : ''}`;
      const remove = document.createElement('button');
      remove.className = 'chip-remove';
      remove.textContent = '×';
      remove.setAttribute('aria-label', `Remove context ${chip.label}`);
      remove.addEventListener('click', () => vscode.postMessage({ type: 'removeChip', id: chip.id }));
      item.append(remove);
      return item;
    }),
  );
}

/** Where the answer points: each copied workspace line as a link to it. */
function placeLinks(places: AnswerLocation[]): HTMLElement {
  const list = document.createElement('ul');
  list.className = 'places';
  list.setAttribute('aria-label', 'Places the answer points to');
  for (const place of places) {
    const link = document.createElement('a');
    link.href = '#';
    link.className = 'place-link';
    link.textContent = `${place.path}:${place.line}`;
    link.title = `Open ${place.path} at line ${place.line}: ${place.text}`;
    link.addEventListener('click', (event) => {
      event.preventDefault();
      vscode.postMessage({ type: 'openSource', path: place.path, line: place.line });
    });
    const item = document.createElement('li');
    item.append('→ ', link);
    list.append(item);
  }
  return list;
}

function sourceLinks(sources: Source[]): HTMLElement {
  const list = document.createElement('ul');
  list.className = 'sources';
  list.setAttribute('aria-label', 'Sources');
  for (const source of sources) {
    const link = document.createElement('a');
    link.href = '#';
    link.className = 'source-link';
    link.textContent = `${source.path}:${source.startLine}${source.endLine > source.startLine ? `-${source.endLine}` : ''}`;
    // weight 0: a remote server's answer named this place (it reports no attention)
    link.title = `Open ${source.path} at line ${source.startLine} (${source.weight > 0 ? `attention ${(source.weight * 100).toFixed(1)}%` : 'named in the answer'})`;
    link.addEventListener('click', (event) => {
      event.preventDefault();
      vscode.postMessage({ type: 'openSource', path: source.path, line: source.startLine });
    });
    const item = document.createElement('li');
    item.append(link);
    list.append(item);
  }
  return list;
}

/** Copy / Insert buttons on every code block of an answer. */
function decorateCodeBlocks(container: HTMLElement): void {
  for (const block of container.querySelectorAll('pre.code-block')) {
    const code = block.textContent ?? '';
    const bar = document.createElement('div');
    bar.className = 'code-actions';
    for (const [label, type] of [
      ['Copy', 'copyCode'],
      ['Insert', 'insertCode'],
    ] as const) {
      const button = document.createElement('button');
      button.textContent = label;
      button.setAttribute('aria-label', `${label} code${type === 'insertCode' ? ' at the cursor' : ''}`);
      button.addEventListener('click', () => vscode.postMessage({ type, code }));
      bar.append(button);
    }
    block.before(bar);
  }
}

function renderTurn(turn: ChatTurn): void {
  let article = rendered.get(turn.requestId);
  if (article === undefined) {
    article = document.createElement('article');
    article.className = 'turn';
    article.dataset.requestId = turn.requestId;
    rendered.set(turn.requestId, article);
    log.append(article);
  }
  const header = document.createElement('div');
  header.className = 'question';
  header.textContent = turn.question;
  if (turn.context.length > 0) {
    const context = document.createElement('div');
    context.className = 'question-context';
    context.textContent = `with ${turn.context.map((chip) => chip.label).join(', ')}`;
    header.append(context);
  }
  const answer = document.createElement('div');
  answer.className = 'answer';
  answer.setAttribute('aria-busy', String(turn.finishReason === undefined));
  answer.innerHTML = renderMarkdown(turn.answer);
  decorateCodeBlocks(answer);
  const footer = document.createElement('div');
  footer.className = 'turn-footer';
  if (turn.finishReason === undefined) footer.textContent = turn.answer === '' ? 'Thinking…' : '';
  else if (turn.finishReason === 'cancelled') footer.textContent = 'Stopped.';
  else if (turn.finishReason === 'error') footer.textContent = `Error: ${turn.error ?? 'unknown'}`;
  else if (turn.finishReason === 'length') footer.textContent = 'The answer reached its length limit.';
  // what the sparse layers read for a local answer (a remote one reports no attention: its weights are 0)
  if (turn.sources.some((source) => source.weight > 0) && turn.finishReason !== undefined && turn.finishReason !== 'error') {
    const show = document.createElement('button');
    show.className = 'show-read';
    show.textContent = 'Show what it read';
    show.title = 'The workspace map with the blocks this answer drew on';
    show.addEventListener('click', () => vscode.postMessage({ type: 'showRead', requestId: turn.requestId }));
    footer.append(show);
  }
  article.dataset.state = turn.finishReason ?? 'streaming';
  article.dataset.deltas = String(deltaCounts.get(turn.requestId) ?? 0);
  const places = turn.locations ?? [];
  article.replaceChildren(header, answer, ...(places.length > 0 ? [placeLinks(places)] : []), ...(turn.sources.length > 0 ? [sourceLinks(turn.sources)] : []), footer);
}

function scheduleRender(requestId: string): void {
  if (renderQueued.size === 0) {
    requestAnimationFrame(() => {
      const queued = renderQueued;
      renderQueued = new Set();
      for (const id of queued) {
        const turn = turns.find((candidate) => candidate.requestId === id);
        if (turn !== undefined) renderTurn(turn);
      }
      log.scrollTop = log.scrollHeight;
    });
  }
  renderQueued.add(requestId);
}

function renderAll(): void {
  rendered.clear();
  log.replaceChildren();
  for (const turn of turns) renderTurn(turn);
  if (turns.length === 0) {
    const empty = document.createElement('p');
    empty.className = 'empty';
    empty.textContent = 'Ask anything about this workspace: Panorama reads all of it.';
    log.append(empty);
  }
  log.scrollTop = log.scrollHeight;
  updateControls();
}

function upsert(turn: ChatTurn): void {
  const index = turns.findIndex((candidate) => candidate.requestId === turn.requestId);
  if (index === -1) {
    if (turns.length === 0) log.replaceChildren();
    turns.push(turn);
  } else turns[index] = turn;
  scheduleRender(turn.requestId);
  updateControls();
  save();
}

window.addEventListener('message', (event: MessageEvent<HostMessage>) => {
  const message = event.data;
  switch (message.type) {
    case 'history':
      turns = message.turns;
      renderAll();
      save();
      break;
    case 'chips':
      chips = message.chips;
      renderChips();
      break;
    case 'turnStarted':
    case 'turnFinished':
      upsert(message.turn);
      break;
    case 'answerDelta': {
      const turn = turns.find((candidate) => candidate.requestId === message.requestId);
      if (turn !== undefined) {
        turn.answer += message.text;
        deltaCounts.set(turn.requestId, (deltaCounts.get(turn.requestId) ?? 0) + 1);
        scheduleRender(turn.requestId);
      }
      break;
    }
    case 'engine':
      engineState.textContent = message.ready ? '' : message.label;
      engineState.hidden = message.ready;
      break;
    case 'notice':
      engineState.hidden = false;
      engineState.textContent = message.text;
      break;
  }
});

function send(): void {
  const text = draft().trim();
  if (text === '' || streaming() !== undefined) return;
  vscode.postMessage({ type: 'ask', question: text, context: chips });
  setDraft('');
  save();
}

function stop(): void {
  const active = streaming();
  if (active !== undefined) vscode.postMessage({ type: 'stop', requestId: active.requestId });
}

sendButton.addEventListener('click', send);
stopButton.addEventListener('click', stop);
clearButton.addEventListener('click', () => vscode.postMessage({ type: 'clearHistory' }));
question.addEventListener('keydown', (event) => {
  if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    send();
  } else if (event.key === 'Escape') stop();
});
question.addEventListener('input', save);

// a reload shows the saved conversation at once; the host's 'history' then replaces it
const saved = vscode.getState();
if (typeof saved === 'object' && saved !== null && 'turns' in saved && Array.isArray(saved.turns)) {
  turns = saved.turns;
  if ('draft' in saved && typeof saved.draft === 'string') setDraft(saved.draft);
}
renderAll();
vscode.postMessage({ type: 'ready' });
