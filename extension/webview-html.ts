// The HTML every Panorama webview starts from, built in one place: the script and
// stylesheet through asWebviewUri, a fresh nonce per render, and a strict Content
// Security Policy. Each view passes its own body.

import { randomBytes } from 'node:crypto';
import * as vscode from 'vscode';

export interface WebviewPage {
  title: string;
  /** The view's bundle, under dist/. */
  script: string;
  /** Its stylesheet, under media/. */
  style: string;
  /** Markup inside <body>, before the script. */
  body: string;
}

export function webviewHtml(webview: vscode.Webview, extensionUri: vscode.Uri, page: WebviewPage): string {
  const nonce = randomBytes(16).toString('base64');
  const scriptUri = webview.asWebviewUri(vscode.Uri.joinPath(extensionUri, 'dist', page.script));
  const styleUri = webview.asWebviewUri(vscode.Uri.joinPath(extensionUri, 'media', page.style));
  const csp = [
    // nothing loads unless a directive below allows it (no network: the views work offline)
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
  <title>${page.title}</title>
</head>
<body>
${page.body}
  <script nonce="${nonce}" src="${scriptUri}"></script>
</body>
</html>`;
}
