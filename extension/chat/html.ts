// The chat view's HTML: its body on the shared page (webview-html.ts: asWebviewUri,
// a nonce per render, the strict Content Security Policy).

import type * as vscode from 'vscode';
import { webviewHtml } from '../webview-html.js';

export function chatHtml(webview: vscode.Webview, extensionUri: vscode.Uri): string {
  return webviewHtml(webview, extensionUri, {
    title: 'Panorama Chat',
    script: 'webview.js',
    style: 'chat.css',
    body: `  <div id="engine-state" role="status" aria-live="polite"></div>
  <main id="log" role="log" aria-live="polite" aria-label="Conversation"></main>
  <section id="composer" aria-label="Ask about the workspace">
    <div id="chips" role="list" aria-label="Context"></div>
    <vscode-textarea id="question" rows="3" resize="vertical" placeholder="Ask about the workspace (Enter to send, Shift+Enter for a new line)" aria-label="Question"></vscode-textarea>
    <div id="actions">
      <vscode-button id="send" title="Send (Enter)">Ask</vscode-button>
      <vscode-button id="stop" secondary hidden title="Stop generating (Escape)">Stop</vscode-button>
      <vscode-button id="clear" secondary title="Clear the conversation">Clear</vscode-button>
    </div>
  </section>`,
  });
}
