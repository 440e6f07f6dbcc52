export interface FileHandlerGeneratorSchema {
  /** Package name in kebab-case: packages/<name>, npm @kho/<name>; the handler's compatible is `<name>-v1`. */
  name: string;
  /** Skip the npm install that records the new workspace package in package-lock.json. */
  skipInstall?: boolean;
}
