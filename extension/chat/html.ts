// The chat view's HTML, built in one place: every resource through
// asWebviewUri, a fresh nonce per render, and a strict Content Security Policy.

import { randomBytes } from 'node:crypto';
import * as vscode from 'vscode';

export function chatHtml(webview: vscode.Webview, extensionUri: vscode.Uri): string {
  const nonce = randomBytes(16).toString('base64');
  const scriptUri = webview.asWebviewUri(vscode.Uri.joinPath(extensionUri, 'dist', 'webview.js'));
  const styleUri = webview.asWebviewUri(vscode.Uri.joinPath(extensionUri, 'media', 'chat.css'));
  const csp = [
    // nothing loads unless a directive below allows it (no network: the chat works offline)
    "default-src 'none'",
    // our stylesheet only; the web components' styles are constructed stylesheets, which CSP does not gate
    `style-src ${webview.cspSource}`,
    // images in model output may only come from the extension itself (no remote fetches, no tracking pixels)
    `img-src ${webview.cspSource} data:`,
    `font-src ${webview.cspSource}`,
    // only our bundle, tagged with this render's nonce: injected markup cannot run script
    `script-src 'nonce-${nonce}'`,
    // the view is never framed elsewhere and posts no forms
    "form-action 'none'",
    "base-uri 'none'",
  ].join('; ');
  return `<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="UTF-8">
  <meta http-equiv="Content-Security-Policy" content="${csp}">
  <meta name="viewport" content="width=device-width, initial-scale=1.0">
  <link href="${styleUri}" rel="stylesheet">
  <title>Panorama Chat</title>
</head>
<body>
  <div id="engine-state" role="status" aria-live="polite"></div>
  <main id="log" role="log" aria-live="polite" aria-label="Conversation"></main>
  <section id="composer" aria-label="Ask about the workspace">
    <div id="chips" role="list" aria-label="Context"></div>
    <vscode-textarea id="question" rows="3" resize="vertical" placeholder="Ask about the workspace (Enter to send, Shift+Enter for a new line)" aria-label="Question"></vscode-textarea>
    <div id="actions">
      <vscode-button id="send" title="Send (Enter)">Ask</vscode-button>
      <vscode-button id="stop" secondary hidden title="Stop generating (Escape)">Stop</vscode-button>
      <vscode-button id="clear" secondary title="Clear the conversation">Clear</vscode-button>
    </div>
  </section>
  <script nonce="${nonce}" src="${scriptUri}"></script>
</body>
</html>`;
}
