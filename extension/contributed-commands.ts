// The commands the extension contributes, read from its package.json (what VS Code
// itself reads), so no list of them is kept by hand. No vscode import: the test
// reads the real package.json through it.

/** The command ids under contributes.commands of a package.json; throws if it has none. */
export function contributedCommands(packageJson: unknown): string[] {
  const commands = isObject(packageJson) && isObject(packageJson.contributes) ? packageJson.contributes.commands : undefined;
  if (!Array.isArray(commands)) throw new Error('package.json has no contributes.commands list: the extension cannot know its commands');
  return commands.map((entry, index) => {
    if (!isObject(entry) || typeof entry.command !== 'string' || entry.command === '') throw new Error(`package.json: contributes.commands[${index}] has no command id`);
    return entry.command;
  });
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
